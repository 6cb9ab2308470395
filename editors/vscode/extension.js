// Starts the retrace Debug Adapter: `python -m retracesoftware dap` speaks the
// Debug Adapter Protocol on its stdin/stdout. Everything else (breakpoints,
// step back, reverse continue) is the adapter's.
const vscode = require("vscode");

function activate(context) {
  const factory = {
    createDebugAdapterDescriptor(session) {
      const config = session.configuration || {};
      const python = config.python ||
        vscode.workspace.getConfiguration("python").get("defaultInterpreterPath") || "python3";
      return new vscode.DebugAdapterExecutable(python, ["-m", "retracesoftware", "dap"],
        { cwd: config.cwd || (vscode.workspace.workspaceFolders || [])[0]?.uri.fsPath });
    },
  };
  context.subscriptions.push(vscode.debug.registerDebugAdapterDescriptorFactory("retrace", factory));
}

function deactivate() {}

module.exports = { activate, deactivate };
