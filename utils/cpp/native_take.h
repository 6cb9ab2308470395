// The stream reader's take_event as a C call: the one C interface between
// _stream and _utils (stream sits above utils; this header is utils', and
// stream/cpp/reader.cpp includes it to provide the call).
//
// A replayed lock acquire (utils' ReplaySyncGateway) is handed the reader's
// bound ``take_event``. When that is a method of a reader with a
// ``native_take_event`` attribute holding a capsule named
// RETRACE_NATIVE_TAKE_NAME, the gateway calls the capsule's function
// directly: no accept object, no result tuple, no Python call in between.
// Anything else (the Python backend's reader, a view's wrapper) is called as
// Python, with the same meaning (proxy/protocol.py Reader.take_event).
#pragma once

#include <Python.h>

#define RETRACE_NATIVE_TAKE_NAME "retracesoftware.stream.native_take_event"

extern "C" {

// accept(ctx, value): 1 take the event, 0 leave it, -1 error set. Called with
// the GIL held, after this thread's `tag value` was found at the head and
// before anything is consumed.
typedef int (*retrace_accept_fn)(void* ctx, PyObject* value);

struct RetraceNativeTake {
    int version;  // 1; fields are only ever appended
    // take_event(reader, thread, tag, accept, ctx, &value, &same_thread):
    // the meaning of Reader.take_event. 1: taken (*value a new reference,
    // *same_thread whether the next event is again `thread`'s); 0: nothing
    // consumed; -1: error set (nothing consumed).
    int (*take_event)(PyObject* reader, PyObject* thread, PyObject* tag, retrace_accept_fn accept, void* ctx,
                      PyObject** value, int* same_thread);
};

}  // extern "C"
