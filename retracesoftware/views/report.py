"""``python -m retracesoftware report PATH -o report.html``: one self-contained
HTML page about a recorded run (inline CSS and JavaScript, no network: a
Content-Security-Policy forbids every fetch).

Sections: overview (program, Python, duration, exit code, processes, threads,
events, whether the replay was faithful); a zoomable timeline per thread of
the boundary calls (x = event index, the exact recorded interleaving; lock
acquires and thread switches drawn); what the run read and wrote (files,
environment variable names, hosts and ports, subprocesses, SQL, URLs — from
the argument summaries); exceptions and where; the architecture map
(modules and classes of the project's own code as boxes, calls between them
as edges weighted by count, from an instrumented replay); and a filterable
list of events.

Sizes are bounded whatever the recording: the timeline is aggregated into
buckets, the event list is an even sample (the page says so), tables are
capped — a 10M-event recording gives a page of a few MB.
"""
from __future__ import annotations

import html
import json
import os
import time

from retracesoftware.views import _output as _common
from retracesoftware.views import _facts
from retracesoftware.views.instrumented_run import run_instrumented


def build_report(path, *, progress=None, replay=True, include=(), exclude=(), force=False) -> dict:
    """The report's data (a JSON-able dict): what `write_report` embeds."""
    _common.check_recording(path)
    run = run_instrumented(path, spans=False, progress=progress, include=include, exclude=exclude,
                           replay_args=["--force"] if force else ()) if replay else None
    try:
        facts = _facts.gather(path, run)
        return _data(facts, run)
    finally:
        if run is not None:
            run.close()


def _data(facts, run) -> dict:
    pre = facts.preamble
    started = pre.get("started_at")
    io = {kind: list(table.values()) for kind, table in facts.io.items()}
    return {
        "recording": pre.get("_path"),
        "program": facts.program,
        "python": (pre.get("python_version") or "").split()[0],
        "retrace_version": pre.get("retrace_version"),
        "cwd": pre.get("cwd"),
        "pid": pre.get("pid"),
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else None,
        "duration_s": facts.duration_s,
        "exit_code": facts.exit_code,
        "complete": facts.complete,
        "damage": facts.damage,
        "faithful": facts.faithful,
        "problem": run.problem if run is not None else None,
        "replay_s": run.elapsed_s if run is not None else None,
        "tracer": run.meta.get("tracer") if run is not None else None,
        "events": facts.last_index + 1,
        "boundary_events": facts.events,
        "kinds": dict(facts.kinds),
        "functions": facts.functions.most_common(30),
        "threads": [{"id": str(t), "events": info["events"], "first": info["first"], "last": info["last"],
                     "top": info["functions"].most_common(5)} for t, info in facts.threads.items()],
        "processes": facts.processes(),
        "timeline": facts.timeline,
        "bucket_size": facts.bucket_size,
        "switches": facts.switches,
        "switches_total": facts.switches_total,
        "sample": facts.sample,
        "sample_every": facts.sample_every,
        "io": io,
        "io_truncated": facts.io_truncated,
        "summaries": facts.summaries,
        "exceptions": facts.exceptions,
        "exceptions_total": facts.exceptions_total,
        "traceback": run.program_traceback if run is not None else [],
        "slowest": [{"waited": w, **e} for w, e in facts.slowest],
        "architecture": _facts.architecture(run),
    }


def write_report(path, out, *, progress=None, replay=True, include=(), exclude=(), force=False) -> dict:
    """Write the HTML report of recording *path* to *out*; return its data."""
    data = build_report(path, progress=progress, replay=replay, include=include, exclude=exclude, force=force)
    page = render(data)
    with _common.open_output(out) as fh:
        fh.write(page)
    data["bytes"] = len(page.encode("utf-8"))
    return data


# ------------------------------------------------------------------ HTML
def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _row(label, value) -> str:
    return f"<tr><th>{_e(label)}</th><td>{value}</td></tr>"


def _overview(d) -> str:
    if d["faithful"] is None:
        faithful = "<span class='muted'>not replayed</span>"
    elif d["faithful"]:
        faithful = "<span class='ok'>yes — the replay matched the recording</span>"
    else:
        faithful = f"<span class='bad'>no — {_e(d['problem'])}</span>"
    if d["complete"]:
        status = f"exit code <b>{_e(d['exit_code'])}</b>"
    else:
        status = "<span class='bad'>incomplete</span> (the program was killed, or its recording damaged" + (
            f": {_e(d['damage'])}" if d["damage"] else "") + ")"
    duration = f"{d['duration_s']:.3f} s" if isinstance(d["duration_s"], (int, float)) else "?"
    procs = d["processes"]
    processes = f"{1 + len(procs)}" + ("" if not procs else " (" + ", ".join(
        f"pid {_e(p['pid'])}: {_e(p['kind'])} of {_e(p['parent_pid'])}" for p in procs[:20]) + ")")
    threads = ", ".join(f"{_e(t['id'])} ({t['events']:,} events)" for t in d["threads"][:50])
    kinds = ", ".join(f"{_e(k)} {v:,}" for k, v in sorted(d["kinds"].items()))
    rows = [
        _row("program", f"<code>{_e(d['program'])}</code>"),
        _row("recording", f"<code>{_e(d['recording'])}</code>"),
        _row("recorded", f"{_e(d['started'])}, Python {_e(d['python'])}, pid {_e(d['pid'])}, cwd <code>{_e(d['cwd'])}</code>"),
        _row("duration", duration),
        _row("ended", status),
        _row("processes", processes),
        _row("threads", f"{len(d['threads'])}: {threads}"),
        _row("events", f"{d['events']:,} on the tape; {d['boundary_events']:,} boundary events ({kinds}); "
                       f"{d['switches_total']:,} thread switches"),
        _row("faithful replay", faithful + (f" <span class='muted'>(instrumented replay {d['replay_s']:.2f} s, "
                                           f"{_e(d['tracer'])})</span>" if d["replay_s"] is not None else "")),
    ]
    return "<table class='kv'>" + "".join(rows) + "</table>"


_IO_TITLES = {"file": "Files", "env": "Environment variables (names)", "network": "Hosts and ports",
              "subprocess": "Subprocesses", "sql": "SQL statements", "url": "URLs"}


def _io(d) -> str:
    parts = []
    if not d["summaries"]:
        parts.append("<p class='note'>This recording has no argument summaries (made without them), so "
                     "paths, names and addresses are not known: the calls are listed by function.</p>")
    any_rows = False
    for kind, rows in d["io"].items():
        if not rows:
            continue
        any_rows = True
        body = "".join(f"<tr><td>{_e(r['direction'])}</td><td><code>{_e(r['what'])}</code></td>"
                       f"<td class='num'>{r['count']:,}</td><td class='num'>{r['first']}</td>"
                       f"<td><code>{_e(r['function'])}</code></td></tr>" for r in rows)
        parts.append(f"<h3 data-kind='{_e(kind)}'>{_e(_IO_TITLES[kind])}</h3><table class='grid'>"
                     f"<tr><th>what</th><th>name</th><th>times</th><th>first event</th><th>via</th></tr>"
                     f"{body}</table>")
    if not any_rows:
        parts.append("<p class='muted'>No file, environment, network, subprocess or SQL access was recorded.</p>")
    if d["io_truncated"]:
        parts.append(f"<p class='note'>Each table is capped at {_facts.CAP} entries.</p>")
    top = "".join(f"<tr><td><code>{_e(n)}</code></td><td class='num'>{c:,}</td></tr>" for n, c in d["functions"])
    parts.append(f"<h3>Busiest boundary functions</h3><table class='grid'><tr><th>function</th><th>calls</th></tr>{top}</table>")
    return "".join(parts)


def _exceptions(d) -> str:
    parts = []
    if d["traceback"]:
        parts.append("<h3>The program's uncaught exception</h3><pre class='tb'>" + _e("\n".join(d["traceback"])) + "</pre>")
    if d["exceptions"]:
        body = "".join(f"<tr><td class='num'>{x['index']}</td><td>{_e(x['thread'])}</td><td><code>{_e(x['function'])}</code></td>"
                       f"<td><code>{_e(x['error'])}</code></td><td>{_e(x['where'] or '')}"
                       + ("<br><span class='muted'>" + _e(" ← ".join(reversed(x["stack"]))) + "</span>" if x["stack"] else "")
                       + "</td></tr>" for x in d["exceptions"])
        parts.append(f"<h3>Boundary calls that raised ({d['exceptions_total']:,})</h3><table class='grid'>"
                     f"<tr><th>event</th><th>thread</th><th>call</th><th>exception</th><th>where (project code)</th></tr>{body}</table>")
        if d["exceptions_total"] > len(d["exceptions"]):
            parts.append(f"<p class='note'>The first {len(d['exceptions'])} are shown.</p>")
    if not parts:
        parts.append("<p class='muted'>No boundary call raised and the program did not fail.</p>")
    return "".join(parts)


def _waits(d) -> str:
    if not d["slowest"]:
        return "<p class='muted'>No thread waited for another.</p>"
    body = "".join(f"<tr><td class='num'>{w['i']}</td><td>{_e(w['t'])}</td><td><code>{_e(w['n'])}</code></td>"
                   f"<td class='num'>{w['waited']:,}</td><td>{_e(w.get('w') or '')}</td></tr>" for w in d["slowest"])
    return ("<p class='note'>Call durations are not recorded. A call during which other threads made many "
            "boundary events was waiting (a lock, a socket, a sleep) or its thread was descheduled.</p>"
            "<table class='grid'><tr><th>event</th><th>thread</th><th>call</th><th>boundary events of other threads before it</th>"
            f"<th>where</th></tr>{body}</table>")


def render(d) -> str:
    payload = json.dumps({k: d[k] for k in ("timeline", "bucket_size", "switches", "sample", "sample_every",
                                             "architecture", "events", "threads")},
                         separators=(",", ":"), default=str)
    payload = payload.replace("</", "<\\/").replace("<!--", "<\\!--")
    sample_note = ("every event is listed" if d["sample_every"] == 1 else
                   f"an even sample of the events is listed (1 in {d['sample_every']}: {len(d['sample']):,} of "
                   f"{d['boundary_events']:,}); the timeline aggregates all of them into buckets of "
                   f"{d['bucket_size']:,} events")
    arch = d["architecture"]
    arch_note = ("" if not arch.get("truncated") else
                 f"<p class='note'>The {sum(len(m['units']) for m in arch['modules'])} busiest of "
                 f"{arch.get('units_total')} modules/classes are drawn.</p>")
    if arch.get("faithful") is False:
        # Never an empty or partial map shown as the run's.
        arch_note = (f"<p class='note bad' id='arch-incomplete'>The instrumented replay did not run the "
                     f"program to its end ({_e(arch.get('problem') or 'unknown reason')}): this map shows "
                     f"only the calls made before it stopped"
                     f"{' — none' if not arch['modules'] else ''}.</p>") + arch_note
    edge_rows = "".join(f"<tr class='edge-row'><td>{_e(e['from'])}</td><td>→</td><td>{_e(e['to'])}</td>"
                        f"<td class='num'>{e['count']:,}</td></tr>" for e in arch["edges"][:300])
    title = f"retrace report: {d['program']}"
    return _TEMPLATE.format(
        title=_e(title), heading=_e(d["program"]), overview=_overview(d), io=_io(d),
        exceptions=_exceptions(d), waits=_waits(d), sample_note=_e(sample_note), arch_note=arch_note,
        edge_rows=edge_rows or "<tr><td colspan='4' class='muted'>no calls between modules or classes</td></tr>",
        payload=payload, css=_CSS, js=_JS)


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:14px 24px}header h1{margin:0;font-size:18px}
header .sub{opacity:.7;font-size:12px}nav{padding:6px 24px;background:#e9ecf1;font-size:13px}
nav a{margin-right:14px;color:#2456a6;text-decoration:none}
section{background:#fff;margin:14px 24px;padding:10px 18px 16px;border-radius:6px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
h2{font-size:16px;margin:6px 0 10px}h3{font-size:14px;margin:14px 0 6px}
table{border-collapse:collapse}table.kv th{text-align:left;padding:3px 14px 3px 0;vertical-align:top;color:#555;font-weight:600}
table.grid{width:100%;font-size:13px}table.grid th,table.grid td{border-bottom:1px solid #eceef2;padding:3px 8px;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}code{font:12px ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
.ok{color:#19753a;font-weight:600}.bad{color:#b3261e;font-weight:600}.muted{color:#888}.note{color:#6b5d00;background:#fff8d6;padding:4px 8px;border-radius:4px;font-size:12px}
pre.tb{background:#fbeeee;padding:8px;overflow:auto;font-size:12px}
#timeline-wrap{position:relative;border:1px solid #dde1e8;border-radius:4px;overflow:hidden}
#timeline{display:block;width:100%;cursor:grab}#tl-info{font:12px ui-monospace,monospace;min-height:18px;margin-top:6px;color:#333}
.legend span{display:inline-block;margin-right:12px;font-size:12px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
button{font-size:12px;margin-right:4px}#archmap{width:100%;border:1px solid #dde1e8;border-radius:4px;background:#fcfcfd}
#archmap .module rect{fill:#eef3fb;stroke:#7d97c4}#archmap .module text.mtitle{font-weight:700;font-size:12px;fill:#1d3b6e}
#archmap .unit rect{fill:#fff;stroke:#9fb1cf}#archmap .unit text{font-size:11px;fill:#1d2330}
#archmap .edge{stroke:#c0583a;fill:none;opacity:.65}#archmap .edge-label{font-size:10px;fill:#a0452a}
#event-table td{font-size:12px}#filter{width:320px;padding:3px 6px}
"""

_JS = r"""
(function(){
'use strict';
var errors=[];
window.addEventListener('error',function(ev){errors.push(String(ev.message));document.body.setAttribute('data-js-errors',errors.join(' | '));});
var D=JSON.parse(document.getElementById('report-data').textContent);
var COLORS=['#3867d6','#f0932b','#20bf6b','#eb3b5a'];
var KIND_COLOR={call:'#3867d6',sync:'#f0932b',callback:'#20bf6b',new:'#8854d0',bind:'#8854d0',callback_def:'#8854d0',value:'#999'};
function esc(s){return String(s==null?'':s).replace(/[&<>"']/g,function(c){return {'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c];});}

// ---------------------------------------------------------------- timeline
var threads=Object.keys(D.timeline);
var canvas=document.getElementById('timeline');
var info=document.getElementById('tl-info');
var LANE=30,LABEL=130,TOP=18;
var total=Math.max(1,D.events);
var view={a:0,b:total};
var byThread={};
D.sample.forEach(function(e){(byThread[e.t]=byThread[e.t]||[]).push(e);});
var lanesList=document.getElementById('timeline-lanes');
threads.forEach(function(t){var li=document.createElement('li');li.setAttribute('data-thread',t);
  var n=(byThread[t]||[]).length;li.textContent='thread '+t+(t==='0'?' (main)':'')+': '+n+' events listed';lanesList.appendChild(li);});
function resize(){var w=canvas.parentNode.clientWidth||900;canvas.width=w;canvas.height=TOP+LANE*Math.max(1,threads.length)+8;draw();}
function x(i){return LABEL+(i-view.a)/(view.b-view.a)*(canvas.width-LABEL-8);}
function draw(){
  var g=canvas.getContext('2d');g.clearRect(0,0,canvas.width,canvas.height);
  g.font='11px sans-serif';g.fillStyle='#555';
  var span=view.b-view.a;
  g.fillText('events '+Math.floor(view.a)+' … '+Math.ceil(view.b)+'  ('+Math.round(span)+' events in view)',LABEL,12);
  var detail=D.sample_every===1||span<2000*D.sample_every;
  threads.forEach(function(t,row){
    var y=TOP+row*LANE;g.fillStyle=row%2?'#f7f8fa':'#fff';g.fillRect(0,y,canvas.width,LANE);
    g.fillStyle='#1d2330';g.fillText(t==='0'?'main (0)':'thread '+t,6,y+LANE/2+4);
    if(detail){
      (byThread[t]||[]).forEach(function(e){if(e.i<view.a||e.i>view.b)return;var px=x(e.i);
        g.fillStyle=e.e?'#eb3b5a':(KIND_COLOR[e.k]||'#3867d6');
        var h=e.k==='sync'?LANE-6:LANE-12;g.fillRect(px-1,y+(LANE-h)/2,Math.max(2,(canvas.width-LABEL)/span*0.8),h);});
    }else{
      var lanes=D.timeline[t],bs=D.bucket_size;
      for(var k=0;k<lanes.length;k++){var i0=k*bs,i1=i0+bs;if(i1<view.a||i0>view.b)continue;
        var c=lanes[k],sum=c[0]+c[1]+c[2]+c[3];if(!sum)continue;var x0=x(i0),x1=Math.max(x0+1,x(i1));
        var h=Math.min(LANE-4,4+Math.log(1+sum)*3),yb=y+(LANE+h)/2;
        for(var j=0;j<4;j++){if(!c[j])continue;var hh=h*c[j]/sum;g.fillStyle=COLORS[j];g.fillRect(x0,yb-hh,x1-x0,hh);yb-=hh;}}
    }
  });
  if(D.switches.length&&span<5000){g.strokeStyle='rgba(80,80,80,.35)';g.lineWidth=1;
    D.switches.forEach(function(s){if(s[0]<view.a||s[0]>view.b)return;var r0=threads.indexOf(s[1]),r1=threads.indexOf(s[2]);
      if(r0<0||r1<0)return;var px=x(s[0]);g.beginPath();g.moveTo(px,TOP+r0*LANE+LANE/2);g.lineTo(px,TOP+r1*LANE+LANE/2);g.stroke();});}
}
function zoom(f,center){var c=center==null?(view.a+view.b)/2:center;var span=Math.max(20,(view.b-view.a)*f);
  view.a=Math.max(0,c-(c-view.a)*span/(view.b-view.a));view.b=Math.min(total,view.a+span);if(view.b-view.a<span)view.a=Math.max(0,view.b-span);draw();}
function indexAt(px){return view.a+(px-LABEL)/(canvas.width-LABEL-8)*(view.b-view.a);}
canvas.addEventListener('wheel',function(ev){ev.preventDefault();zoom(ev.deltaY>0?1.25:0.8,indexAt(ev.offsetX));},{passive:false});
var drag=null;
canvas.addEventListener('mousedown',function(ev){drag={x:ev.clientX,a:view.a,b:view.b};});
window.addEventListener('mouseup',function(){drag=null;});
window.addEventListener('mousemove',function(ev){if(!drag)return;var d=(ev.clientX-drag.x)/(canvas.width-LABEL-8)*(drag.b-drag.a);
  var a=Math.max(0,drag.a-d);var b=Math.min(total,a+(drag.b-drag.a));view.a=b-(drag.b-drag.a);view.b=b;draw();});
canvas.addEventListener('mousemove',function(ev){var row=Math.floor((ev.offsetY-TOP)/LANE);var t=threads[row];if(t==null)return;
  var i=indexAt(ev.offsetX),best=null,bd=1e18;(byThread[t]||[]).forEach(function(e){var d=Math.abs(e.i-i);if(d<bd){bd=d;best=e;}});
  var tol=(view.b-view.a)/(canvas.width-LABEL)*6;
  if(best&&bd<=Math.max(tol,1)){info.textContent='#'+best.i+' thread '+best.t+'  '+best.k+'  '+best.n+(best.a?' '+best.a:'')+(best.r?' -> '+best.r:'')+(best.e?' raised '+best.e:'')+(best.w?'   in '+best.w:'');}
  else info.textContent='event ~'+Math.round(i)+', thread '+t;});
canvas.addEventListener('dblclick',function(){view.a=0;view.b=total;draw();});
document.getElementById('zoom-in').onclick=function(){zoom(0.5);};
document.getElementById('zoom-out').onclick=function(){zoom(2);};
document.getElementById('zoom-reset').onclick=function(){view.a=0;view.b=total;draw();};
window.addEventListener('resize',resize);
resize();

// ---------------------------------------------------------------- architecture map
var A=D.architecture,svg=document.getElementById('archmap'),NS='http://www.w3.org/2000/svg';
function el(name,attrs,parent){var e=document.createElementNS(NS,name);for(var k in attrs)e.setAttribute(k,attrs[k]);if(parent)parent.appendChild(e);return e;}
if(!A.modules.length){var t=el('text',{x:16,y:28},svg);t.textContent=A.faithful===false?'The instrumented replay stopped before any project code ran (see the note above).':'No project code ran under the instrumented replay.';svg.setAttribute('height',44);}
else{
  var unitModule={},incoming={};A.modules.forEach(function(m){m.units.forEach(function(u){unitModule[u.id]=m.name;});incoming[m.name]=0;});
  var medges={};A.edges.forEach(function(e){var a=unitModule[e.from],b=unitModule[e.to];if(a&&b&&a!==b){(medges[a]=medges[a]||{})[b]=1;incoming[b]++;}});
  // layers: longest path from the modules nobody calls (cycles broken by visit order)
  var layer={},order=A.modules.map(function(m){return m.name;});
  var roots=order.filter(function(n){return !incoming[n];});if(!roots.length)roots=[order[0]];
  var queue=roots.slice();roots.forEach(function(r){layer[r]=0;});var guard=0;
  while(queue.length&&guard++<100000){var n=queue.shift();for(var b in (medges[n]||{})){if(layer[b]==null){layer[b]=layer[n]+1;queue.push(b);}}}
  order.forEach(function(n){if(layer[n]==null)layer[n]=0;});
  var cols={};order.forEach(function(n){(cols[layer[n]]=cols[layer[n]]||[]).push(n);});
  var COLW=250,UNITH=34,pos={},maxY=0,ncols=0;
  Object.keys(cols).sort(function(a,b){return a-b;}).forEach(function(c,ci){ncols=ci+1;var y=16;
    cols[c].forEach(function(name){var m=A.modules.filter(function(mm){return mm.name===name;})[0];
      var h=28+m.units.length*(UNITH+6);var gx=16+ci*(COLW+90);
      var g=el('g',{'class':'module','data-module':name},svg);el('rect',{x:gx,y:y,width:COLW,height:h,rx:6},g);
      var tt=el('text',{x:gx+8,y:y+17,'class':'mtitle'},g);tt.textContent=name;
      m.units.forEach(function(u,k){var uy=y+26+k*(UNITH+6);var ug=el('g',{'class':'unit','data-id':u.id,'data-calls':u.calls},g);
        el('rect',{x:gx+8,y:uy,width:COLW-16,height:UNITH,rx:4},ug);
        var label=el('text',{x:gx+14,y:uy+14},ug);label.textContent=(u['class']||'(module-level functions)')+'  ×'+u.calls;
        var fl=el('text',{x:gx+14,y:uy+27,'class':'muted'},ug);fl.textContent=u.functions.slice(0,3).map(function(f){return f[0].split('.').pop();}).join(', ');
        var tip=el('title',{},ug);tip.textContent=u.id+': '+u.functions.map(function(f){return f[0]+' ×'+f[1];}).join(', ');
        pos[u.id]={x:gx+8,y:uy,w:COLW-16,h:UNITH};});
      y+=h+18;maxY=Math.max(maxY,y);});});
  var maxc=1;A.edges.forEach(function(e){maxc=Math.max(maxc,e.count);});
  var eg=el('g',{'class':'edges'},svg);
  A.edges.forEach(function(e){var p=pos[e.from],q=pos[e.to];if(!p||!q)return;
    var x1=p.x+p.w,y1=p.y+p.h/2,x2=q.x,y2=q.y+q.h/2;if(q.x<=p.x){x1=p.x;x2=q.x+q.w;}
    if(Math.abs(q.x-p.x)<1){x1=p.x+p.w;x2=q.x+q.w;}
    var mx=(x1+x2)/2+(Math.abs(q.x-p.x)<1?60:0);
    var path=el('path',{'class':'edge','d':'M'+x1+','+y1+' C'+mx+','+y1+' '+mx+','+y2+' '+x2+','+y2,
      'stroke-width':(1+3*Math.log(1+e.count)/Math.log(1+maxc)).toFixed(2),'data-from':e.from,'data-to':e.to,'data-count':e.count},eg);
    var tip=el('title',{},path);tip.textContent=e.from+' → '+e.to+': '+e.count+' calls';
    var lb=el('text',{'class':'edge-label',x:mx,y:(y1+y2)/2-2},eg);lb.textContent='×'+e.count;});
  el('defs',{},svg);
  svg.setAttribute('height',Math.max(80,maxY+10));svg.setAttribute('viewBox','0 0 '+Math.max(600,16+ncols*(COLW+90))+' '+Math.max(80,maxY+10));
}

// ---------------------------------------------------------------- events
var table=document.getElementById('event-table'),filter=document.getElementById('filter'),LIMIT=2000;
function rows(){var q=filter.value.toLowerCase(),out=[],n=0;
  for(var k=0;k<D.sample.length&&n<LIMIT;k++){var e=D.sample[k];var text=(e.i+' '+e.t+' '+e.k+' '+e.n+' '+(e.a||'')+' '+(e.r||'')+' '+(e.e||'')+' '+(e.w||'')).toLowerCase();
    if(q&&text.indexOf(q)<0)continue;n++;
    out.push('<tr'+(e.e?' class="bad"':'')+'><td class="num">'+e.i+'</td><td>'+esc(e.t)+'</td><td>'+esc(e.k)+'</td><td><code>'+esc(e.n)+'</code></td><td><code>'+esc(e.a||'')+'</code></td><td><code>'+esc(e.e?'raised '+e.e:(e.r||''))+'</code></td><td>'+esc(e.w||'')+'</td></tr>');}
  table.innerHTML='<tr><th>event</th><th>thread</th><th>kind</th><th>function</th><th>arguments</th><th>result</th><th>where</th></tr>'+out.join('');
  document.getElementById('shown').textContent=n>=LIMIT?('first '+LIMIT+' matches shown'):(n+' shown');}
filter.addEventListener('input',rows);rows();
document.body.setAttribute('data-rendered',errors.length?'with-errors':'yes');
})();
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{css}</style></head>
<body data-rendered="no">
<header><h1>{heading}</h1><div class="sub">retracesoftware report — computed offline from the recording and a replay of it</div></header>
<nav><a href="#overview">Overview</a><a href="#timeline-section">Timeline</a><a href="#io">Read &amp; written</a><a href="#exceptions">Exceptions</a><a href="#waits">Waits</a><a href="#architecture">Architecture</a><a href="#events">Events</a></nav>
<section id="overview"><h2>Overview</h2>{overview}</section>
<section id="timeline-section"><h2>Timeline of boundary calls</h2>
<p class="legend"><span><i style="background:#3867d6"></i>call</span><span><i style="background:#f0932b"></i>lock acquire / sync</span><span><i style="background:#20bf6b"></i>callback</span><span><i style="background:#eb3b5a"></i>raised</span><span>grey lines: thread switches</span>
<button id="zoom-in">zoom in</button><button id="zoom-out">zoom out</button><button id="zoom-reset">reset</button>
<span class="muted">wheel to zoom, drag to pan, double-click to reset; x = event index (the recorded order)</span></p>
<div id="timeline-wrap"><canvas id="timeline" height="60"></canvas></div><div id="tl-info"></div>
<ul id="timeline-lanes" class="muted"></ul>
<p class="note">{sample_note}</p></section>
<section id="io"><h2>What the run read and wrote</h2>{io}</section>
<section id="exceptions"><h2>Exceptions</h2>{exceptions}</section>
<section id="waits"><h2>Longest waits</h2>{waits}</section>
<section id="architecture"><h2>Architecture map</h2>
<p class="muted">Modules and classes of the project's own code (not the standard library or site-packages) as boxes; calls between them as edges, thicker for more calls — from a replay traced with sys.monitoring (3.12+) or sys.settrace (3.11).</p>
{arch_note}<svg id="archmap" xmlns="http://www.w3.org/2000/svg" height="80"></svg>
<h3>Calls between modules and classes</h3><table class="grid" id="arch-edges"><tr><th>caller</th><th></th><th>callee</th><th>calls</th></tr>{edge_rows}</table></section>
<section id="events"><h2>Events</h2><p><input id="filter" placeholder="filter: function, thread, text…"> <span id="shown" class="muted"></span></p>
<p class="note">{sample_note}</p><table class="grid" id="event-table"></table></section>
<script type="application/json" id="report-data">{payload}</script>
<script>{js}</script>
</body></html>
"""


def main(argv) -> int:
    p = _common.parser("report", "Write one self-contained HTML page about a recorded run "
                                 "(overview, timeline, inputs/outputs, exceptions, architecture map).")
    p.add_argument("recording")
    p.add_argument("-o", "--output", default="report.html", help="output file (- for stdout)")
    p.add_argument("--no-replay", action="store_true",
                   help="do not replay: no architecture map, no faithfulness check (faster)")
    p.add_argument("--include", action="append", default=[], metavar="GLOB",
                   help="count as project code only what matches (file or module glob; repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="never count as project code (repeatable)")
    p.add_argument("--force", action="store_true",
                   help="replay even if the Python version, sources or configs differ from the recording's")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = p.parse_args(argv)
    progress = _common.Progress("replaying", quiet=args.quiet)
    data = write_report(args.recording, args.output, progress=progress, replay=not args.no_replay,
                        include=args.include, exclude=args.exclude, force=args.force)
    progress.done()
    if data["faithful"] is False:
        # The page says it too; a script reading only the exit code and
        # stderr must not take a map made from a failed replay for the run's.
        _common.say(f"report: warning: the instrumented replay was not faithful: {data['problem']} "
                    "(the architecture map covers only what ran before it stopped)")
    if not args.quiet:
        _common.say(f"report: {data['boundary_events']:,} events, {len(data['threads'])} threads, "
                    f"{len(data['architecture']['edges'])} calls between modules/classes -> {args.output} "
                    f"({data['bytes']:,} bytes)")
    return 0
