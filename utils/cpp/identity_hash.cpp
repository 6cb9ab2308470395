// Deterministic identity hashes (DESIGN §3): object.__hash__ from a
// per-process counter, assigned on first hash, so hash() and set order of
// objects with the default (address-based) hash are the same in record and
// replay.
//
// Choice: a side table {object address -> (hash, weakref)} rather than a
// per-object slot.  CPython objects have no spare header field and the object
// layout of existing types cannot change, so a slot is impossible for types
// we do not own.  The weakref's callback erases the entry when the object
// dies, so the table never outlives (or leaks) an object and a reused address
// never inherits a stale hash.  Objects that cannot be weakly referenced but
// are freed through object's tp_dealloc (plain object() instances, Python
// classes with __slots__ and no __weakref__) go in a second table, `bare`,
// that object's tp_dealloc (swapped for bare_dealloc on first switch-on and
// left in place: types readied meanwhile may have copied the pointer) erases
// from; at switch-on, such objects used as keys are snapshotted with their
// address hash like the weakrefable ones.  C
// types that cannot be weakly referenced and free their instances themselves
// keep the address hash: there would be no way to forget them.
//
// Switching on: every type whose tp_hash is object's default hash (found by
// walking object.__subclasses__() recursively) gets our tp_hash, and
// object.__dict__['__hash__'] becomes a method descriptor calling it, so
// object.__hash__(x) and super().__hash__() agree with hash(x).  Types created
// while on inherit it.  Classes (type and its metaclasses) are left alone:
// the runtime's own caches are keyed by classes.  Objects alive at switch-on
// that are keys of a dict or set (or inside one: snapshot_live_objects) are
// snapshotted with their current address hash, so dicts and sets that
// already hold them keep working; any other object takes a counter hash
// when program code first hashes it.
// Switching off restores every pointer and the dict entry; objects hashed
// while on keep their counter hash (it is stable for their whole life).
//
// In a session (`set_identity_hashing(True, gate=..., thread_id=...)`) only
// a first hash made by program code (the gate's phase is INTERNAL on the
// hashing thread) takes a counter, and the counter is per logical thread
// (`thread_id()`), mixed with that thread's id: threads interleave
// differently on record and replay, and our runtime's own hashing (any
// other phase) differs between the two, so neither may shift the numbers
// the program's objects get. A first hash in another phase stores the
// address hash (stable, not deterministic).
#include "utils.h"

#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace retrace::utils {

namespace {

struct Entry {
    Py_hash_t hash;
    PyObject* weakref;  // owned
};

// Process-wide: tp_hash is a C function pointer with no context argument,
// so its state cannot live in module state.  GIL-protected.
struct IdentityHashState {
    bool enabled = false;
    uint64_t counter = 0;
    hashfunc original = nullptr;  // object's tp_hash at import
    std::unordered_map<PyObject*, Entry> table;
    std::unordered_map<PyObject*, Py_hash_t> bare;          // not weakrefable, forgotten by bare_dealloc
    std::unordered_map<PyObject*, Py_hash_t> bare_ids;      // the same for set_identity_ids
    destructor object_dealloc = nullptr;                    // object's tp_dealloc at import
    destructor traceback_dealloc = nullptr;                 // traceback's tp_dealloc at import
    destructor subtype_dealloc = nullptr;                   // heap classes' tp_dealloc (typeobject.c)
    std::unordered_map<PyObject*, PyObject*> owner_of_ref;  // weakref -> object
    std::vector<PyTypeObject*> patched;                    // borrowed: static or immortal-ish; see enable()
    std::vector<PyObject*> patched_refs;                    // strong refs keeping patched heap types alive
    PyObject* forget = nullptr;                             // weakref callback
    PyObject* saved_object_hash = nullptr;                  // object.__dict__['__hash__'] before enable
    PyObject* hash_descr = nullptr;                         // our replacement
    GateObject* gate = nullptr;                             // session: count only its INTERNAL phase
    PyObject* thread_id = nullptr;                          // session: () -> logical thread id
    PyObject* counters = nullptr;                           // session: dict thread id -> last count
    // Deterministic id() and default reprs (set_identity_ids), see below.
    bool ids_enabled = false;
    std::unordered_map<PyObject*, Entry> ids;               // object -> (id, weakref)
    std::unordered_map<PyObject*, PyObject*> owner_of_idref;
    std::unordered_multiset<uint64_t> live_ids;             // the ids of ids and bare_ids (see next_id)
    PyObject* forget_id = nullptr;
    PyObject* id_counters = nullptr;                        // dict thread id -> last id count
    reprfunc object_repr = nullptr;                         // originals at import
    reprfunc function_repr = nullptr;
    reprfunc gen_repr = nullptr;
    reprfunc coro_repr = nullptr;
    reprfunc asyncgen_repr = nullptr;
    std::vector<PyTypeObject*> repr_patched;
    std::vector<PyObject*> repr_patched_refs;
    PyObject* saved_object_repr = nullptr;                  // object.__dict__['__repr__'] before
    PyObject* repr_descr = nullptr;
};
IdentityHashState& state() {
    static IdentityHashState s;
    return s;
}

Py_hash_t counter_hash(uint64_t n) {
    // Spread the counter (golden-ratio multiply) so set layouts look like
    // real hashes; keep it non-negative, so never -1.
    return static_cast<Py_hash_t>((n * 0x9E3779B97F4A7C15ull) >> 2);
}

// A stable 64-bit key for a logical thread id: ints by value, strs by
// FNV-1a of their UTF-8 (str hashes are salted per process).
bool thread_key(PyObject* tid, uint64_t* out) {
    if (PyLong_Check(tid)) {
        long long v = PyLong_AsLongLong(tid);
        if (v == -1 && PyErr_Occurred()) return false;
        *out = static_cast<uint64_t>(v);
        return true;
    }
    if (PyUnicode_Check(tid)) {
        Py_ssize_t n;
        const char* p = PyUnicode_AsUTF8AndSize(tid, &n);
        if (!p) return false;
        uint64_t h = 0xcbf29ce484222325ull;
        for (Py_ssize_t i = 0; i < n; i++) h = (h ^ static_cast<unsigned char>(p[i])) * 0x100000001b3ull;
        *out = h;
        return true;
    }
    Py_hash_t h = PyObject_Hash(tid);
    if (h == -1) return false;
    *out = static_cast<uint64_t>(h);
    return true;
}

// The next counter hash of the calling logical thread; false with an
// exception set on failure.
bool thread_counter_hash(IdentityHashState& s, Py_hash_t* out) {
    PyObject* tid = PyObject_CallNoArgs(s.thread_id);
    if (!tid) return false;
    uint64_t key;
    if (!thread_key(tid, &key)) { Py_DECREF(tid); return false; }
    PyObject* last = PyDict_GetItemWithError(s.counters, tid);  // borrowed
    unsigned long long n = 0;
    if (last) {
        n = PyLong_AsUnsignedLongLong(last);
        if (n == static_cast<unsigned long long>(-1) && PyErr_Occurred()) { Py_DECREF(tid); return false; }
    } else if (PyErr_Occurred()) {
        Py_DECREF(tid);
        return false;
    }
    PyObject* next = PyLong_FromUnsignedLongLong(n + 1);
    int rc = next ? PyDict_SetItem(s.counters, tid, next) : -1;
    Py_XDECREF(next);
    Py_DECREF(tid);
    if (rc < 0) return false;
    *out = counter_hash((n + 1) + key * 0x100000001b3ull);
    return true;
}

// Drops obj's bare id (an object that is being freed).
void forget_bare_id(IdentityHashState& s, PyObject* obj) {
    auto it = s.bare_ids.find(obj);
    if (it == s.bare_ids.end()) return;
    auto live = s.live_ids.find(static_cast<uint64_t>(it->second));
    if (live != s.live_ids.end()) s.live_ids.erase(live);
    s.bare_ids.erase(it);
}

// object's tp_dealloc while identity hashing has ever been on: forgets the
// object's bare entries, then frees it as object does.  subtype_dealloc
// reaches it for instances of Python classes whose nearest C base is object.
void bare_dealloc(PyObject* obj) {
    IdentityHashState& s = state();
    if (!s.bare.empty()) s.bare.erase(obj);
    if (!s.bare_ids.empty()) forget_bare_id(s, obj);
    s.object_dealloc(obj);
}

// traceback's tp_dealloc, likewise: a traceback has no weak references and
// its default repr (`<traceback object at 0x…>`) is what pytest's long
// failure report prints for a traceback argument (urllib3's Retry.increment).
void bare_traceback_dealloc(PyObject* obj) {
    IdentityHashState& s = state();
    if (!s.bare.empty()) s.bare.erase(obj);
    if (!s.bare_ids.empty()) forget_bare_id(s, obj);
    s.traceback_dealloc(obj);
}

// True when instances of tp are freed through bare_dealloc (so a bare entry
// is forgotten when they die): tp's dealloc, past the Python classes'
// subtype_dealloc (the walk subtype_dealloc makes), is ours.
bool forgotten_on_dealloc(PyTypeObject* tp) {
    IdentityHashState& s = state();
    while (tp && s.subtype_dealloc && tp->tp_dealloc == s.subtype_dealloc) tp = tp->tp_base;
    return tp && (tp->tp_dealloc == bare_dealloc || tp->tp_dealloc == bare_traceback_dealloc);
}

// Swap object's tp_dealloc for bare_dealloc (once; never swapped back).
bool hook_object_dealloc() {
    IdentityHashState& s = state();
    if (PyBaseObject_Type.tp_dealloc == bare_dealloc) return true;
    if (!s.subtype_dealloc) {
        // A class made by a class statement (abc.ABC, always imported) tells
        // subtype_dealloc's address; making a class of our own would show in
        // object.__subclasses__() until collected.
        PyObject* abc = PyImport_ImportModule("abc");
        PyObject* cls = abc ? PyObject_GetAttrString(abc, "ABC") : nullptr;
        Py_XDECREF(abc);
        if (!cls) return false;
        if (PyType_Check(cls) && (reinterpret_cast<PyTypeObject*>(cls)->tp_flags & Py_TPFLAGS_HEAPTYPE))
            s.subtype_dealloc = reinterpret_cast<PyTypeObject*>(cls)->tp_dealloc;
        Py_DECREF(cls);
    }
    PyBaseObject_Type.tp_dealloc = bare_dealloc;
    if (s.traceback_dealloc && PyTraceBack_Type.tp_dealloc == s.traceback_dealloc)
        PyTraceBack_Type.tp_dealloc = bare_traceback_dealloc;
    return true;
}

// Returns -1 with an exception set on failure.
Py_hash_t lookup_or_assign(PyObject* obj, bool snapshot) {
    IdentityHashState& s = state();
    auto it = s.table.find(obj);
    if (it != s.table.end()) return it->second.hash;
    PyObject* ref = nullptr;
    bool bare = false;
    if (!PyType_SUPPORTS_WEAKREFS(Py_TYPE(obj))) {
        if (!forgotten_on_dealloc(Py_TYPE(obj))) return s.original(obj);
        auto b = s.bare.find(obj);
        if (b != s.bare.end()) return b->second;
        bare = true;
    } else {
        ref = PyWeakref_NewRef(obj, s.forget);
        if (!ref) {
            // A type that advertises weakrefs but refuses one: no way to forget
            // the object, so it keeps its address hash.
            PyErr_Clear();
            return s.original(obj);
        }
    }
    Py_hash_t h;
    if (snapshot || (s.gate && gate_get(s.gate) != INTERNAL)) {
        h = s.original(obj);
    } else if (s.thread_id) {
        if (!thread_counter_hash(s, &h)) {
            // Never fail a hash() because of us: the address hash is stable.
            PyErr_Clear();
            h = s.original(obj);
        }
    } else {
        h = counter_hash(++s.counter);
    }
    if (bare) {
        s.bare.emplace(obj, h);
        return h;
    }
    s.table.emplace(obj, Entry{h, ref});
    s.owner_of_ref.emplace(ref, obj);
    return h;
}

Py_hash_t identity_tp_hash(PyObject* obj) { return lookup_or_assign(obj, false); }

PyObject* forget_cb(PyObject*, PyObject* ref) {
    IdentityHashState& s = state();
    auto it = s.owner_of_ref.find(ref);
    if (it != s.owner_of_ref.end()) {
        s.table.erase(it->second);
        s.owner_of_ref.erase(it);
        Py_DECREF(ref);  // the weakref machinery holds its own reference during the callback
    }
    Py_RETURN_NONE;
}

PyObject* identity_hash(PyObject*, PyObject* obj) {
    Py_hash_t h = lookup_or_assign(obj, false);
    if (h == -1 && PyErr_Occurred()) return nullptr;
    return PyLong_FromSsize_t(h);
}

PyObject* object_hash_method(PyObject* self, PyObject*) { return identity_hash(nullptr, self); }

PyMethodDef forget_def = {"_identity_hash_forget", forget_cb, METH_O, nullptr};
PyMethodDef object_hash_def = {"__hash__", object_hash_method, METH_NOARGS,
                               "Return a deterministic (counter-based) identity hash."};

int walk_and_patch(PyTypeObject* tp) {
    IdentityHashState& s = state();
    if (PyType_IsSubtype(tp, &PyType_Type)) return 0;  // classes keep the address hash
    if (tp->tp_hash == s.original) {
        tp->tp_hash = identity_tp_hash;
        s.patched.push_back(tp);
        if (tp->tp_flags & Py_TPFLAGS_HEAPTYPE) s.patched_refs.push_back(Py_NewRef(reinterpret_cast<PyObject*>(tp)));
    }
    PyObject* subs = PyObject_CallMethod(reinterpret_cast<PyObject*>(tp), "__subclasses__", nullptr);
    if (!subs) return -1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(subs); ++i) {
        if (walk_and_patch(reinterpret_cast<PyTypeObject*>(PyList_GET_ITEM(subs, i))) < 0) {
            Py_DECREF(subs);
            return -1;
        }
    }
    Py_DECREF(subs);
    return 0;
}

int set_object_dict_hash(PyObject* value) {
    PyObject* dict;
#if PY_VERSION_HEX >= 0x030C0000  // PYVERSIONS: object's dict lives in the interpreter state
    dict = PyType_GetDict(&PyBaseObject_Type);
#else
    dict = Py_NewRef(PyBaseObject_Type.tp_dict);
#endif
    if (!dict) return -1;
    int rc = PyDict_SetItemString(dict, "__hash__", value);
    Py_DECREF(dict);
    PyType_Modified(&PyBaseObject_Type);
    return rc;
}

// The snapshot at switch-on.  An object's address hash matters after the
// switch only where it was stored: as a dict key or set member, or inside
// one (a tuple key's items, a weak-keyed entry's referent, the fields a
// key's own __hash__ combines).  Those objects keep their address hash;
// every other object, old or new, takes a counter hash when program code
// first hashes it (a set of the stdlib's functions iterates the same way on
// record and replay, where their addresses differ).  Snapshotting every
// weakrefable object alive instead was a weakref and two table entries for
// each of the ~3,500 functions and instances alive at a trivial program's
// start: most of set_identity_hashing's 3 ms.
struct SnapshotWalk {
    std::unordered_set<PyObject*> seen;  // keys' contents already looked into
    int depth = 0;                       // of what snapshot_key_visit is given
    bool failed = false;
};

void snapshot_key(SnapshotWalk& w, PyObject* k, int depth);

int snapshot_key_visit(PyObject* o, void* arg) {
    auto* w = static_cast<SnapshotWalk*>(arg);
    snapshot_key(*w, o, w->depth);
    return w->failed ? -1 : 0;
}

void snapshot_key(SnapshotWalk& w, PyObject* k, int depth) {
    IdentityHashState& s = state();
    PyTypeObject* tp = Py_TYPE(k);
    if (tp->tp_hash == identity_tp_hash) {
        if (PyType_SUPPORTS_WEAKREFS(tp)) {
            if (!s.table.count(k) && lookup_or_assign(k, true) == -1 && PyErr_Occurred()) w.failed = true;
        } else if (!s.bare.count(k) && forgotten_on_dealloc(tp)) {
            s.bare.emplace(k, s.original(k));
        }
        return;  // its hash does not depend on what it holds
    }
    if (PyType_Check(k) || PyUnicode_CheckExact(k) || PyLong_CheckExact(k) || k == Py_None) return;
    if (PyWeakref_CheckRef(k)) {
        // weakref.WeakKeyDictionary, WeakSet: the ref's hash is its referent's
        PyObject* referent = nullptr;
#if PY_VERSION_HEX >= 0x030D0000  // PYVERSIONS: PyWeakref_GetObject is deprecated in 3.13
        if (PyWeakref_GetRef(k, &referent) < 0) PyErr_Clear();
#else
        referent = Py_XNewRef(PyWeakref_GetObject(k));
#endif
        if (referent && referent != Py_None) snapshot_key(w, referent, depth + 1);
        Py_XDECREF(referent);
        return;
    }
    if (!tp->tp_traverse || depth >= 4 || !w.seen.insert(k).second) return;
    int saved = w.depth;
    w.depth = depth + 1;
    tp->tp_traverse(k, snapshot_key_visit, &w);
    w.depth = saved;
}

// Every key of a dict or set (subclasses too).
void snapshot_keys_of(SnapshotWalk& w, PyObject* o) {
    if (PyDict_Check(o)) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (!w.failed && PyDict_Next(o, &pos, &key, &value)) snapshot_key(w, key, 0);
    } else if (PyAnySet_Check(o)) {
        PyObject* it = PyObject_GetIter(o);
        if (!it) {
            w.failed = true;
            return;
        }
        PyObject* key;
        while (!w.failed && (key = PyIter_Next(it))) {
            snapshot_key(w, key, 0);
            Py_DECREF(key);
        }
        Py_DECREF(it);
        if (PyErr_Occurred()) w.failed = true;
    }
}

// tp_traverse visitor over what live objects hold: a dict the collector
// does not track (only atoms in it, a bare object() key among them) is
// reached through its holder; untracked tuples are looked into, a few
// levels deep.
struct UntrackedWalk {
    SnapshotWalk* keys;
    int depth;
};

int untracked_visit(PyObject* o, void* arg) {
    auto* u = static_cast<UntrackedWalk*>(arg);
    // The collector leaves only tuples and dicts untracked: a type test
    // first (this runs for every reference every live object holds).
    PyTypeObject* tp = Py_TYPE(o);
    if (tp != &PyTuple_Type && tp != &PyDict_Type) return 0;
    if (PyObject_GC_IsTracked(o)) return 0;
    snapshot_keys_of(*u->keys, o);
    if (u->depth < 4 && Py_TYPE(o)->tp_traverse) {
        UntrackedWalk deeper{u->keys, u->depth + 1};
        Py_TYPE(o)->tp_traverse(o, untracked_visit, &deeper);
    }
    return u->keys->failed ? -1 : 0;
}

// gc.get_objects(): a new list, or nullptr with an exception set.
PyObject* collector_objects() {
    PyObject* gc = PyImport_ImportModule("gc");
    if (!gc) return nullptr;
    PyObject* objs = PyObject_CallMethod(gc, "get_objects", nullptr);
    Py_DECREF(gc);
    return objs;
}

int snapshot_live_objects() {
    PyObject* objs = collector_objects();
    if (!objs) return -1;
    SnapshotWalk w;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(objs) && !w.failed; ++i) {
        PyObject* o = PyList_GET_ITEM(objs, i);
        snapshot_keys_of(w, o);
        if (Py_TYPE(o)->tp_traverse) {
            UntrackedWalk u{&w, 0};
            Py_TYPE(o)->tp_traverse(o, untracked_visit, &u);
        }
    }
    Py_DECREF(objs);
    return w.failed ? -1 : 0;
}

void clear_session(IdentityHashState& s) {
    Py_CLEAR(s.gate);
    Py_CLEAR(s.thread_id);
    Py_CLEAR(s.counters);
    Py_CLEAR(s.id_counters);
}

// A session's gate and thread ids, with fresh counters (None: not used).
bool start_session(IdentityHashState& s, PyObject* gate, PyObject* thread_id) {
    PyObject* counters = PyDict_New();
    if (!counters) return false;
    PyObject* id_counters = PyDict_New();
    if (!id_counters) { Py_DECREF(counters); return false; }
    clear_session(s);
    s.counters = counters;
    s.id_counters = id_counters;
    if (gate != Py_None) s.gate = reinterpret_cast<GateObject*>(Py_NewRef(gate));
    if (thread_id != Py_None) s.thread_id = Py_NewRef(thread_id);
    return true;
}

PyObject* set_identity_hashing(PyObject*, PyObject* args, PyObject* kwargs) {
    static const char* kwlist[] = {"enabled", "gate", "thread_id", nullptr};
    PyObject* arg;
    PyObject* gate = Py_None;
    PyObject* thread_id = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$OO:set_identity_hashing", const_cast<char**>(kwlist),
                                     &arg, &gate, &thread_id))
        return nullptr;
    int enable = PyObject_IsTrue(arg);
    if (enable < 0) return nullptr;
    if (gate != Py_None && !PyObject_TypeCheck(gate, GateType)) {
        PyErr_Format(PyExc_TypeError, "set_identity_hashing: gate must be a Gate, not %s", Py_TYPE(gate)->tp_name);
        return nullptr;
    }
    if (thread_id != Py_None && !PyCallable_Check(thread_id)) {
        PyErr_Format(PyExc_TypeError, "set_identity_hashing: thread_id must be callable, not %s",
                     Py_TYPE(thread_id)->tp_name);
        return nullptr;
    }
    IdentityHashState& s = state();
    if (enable == static_cast<int>(s.enabled)) {
        if (enable && (gate != Py_None || thread_id != Py_None)) {
            // Already on: a new session (the pytest integration records and
            // replays each test with a System of its own): counters restart,
            // no new snapshot (objects keep the hashes they have).
            if (!start_session(s, gate, thread_id)) return nullptr;
        }
        Py_RETURN_NONE;
    }
    if (enable) {
        if (!hook_object_dealloc()) return nullptr;
        if (!start_session(s, gate, thread_id)) return nullptr;
        PyObject* dict;
#if PY_VERSION_HEX >= 0x030C0000  // PYVERSIONS
        dict = PyType_GetDict(&PyBaseObject_Type);
#else
        dict = Py_NewRef(PyBaseObject_Type.tp_dict);
#endif
        if (!dict) return nullptr;
        PyObject* saved = PyDict_GetItemString(dict, "__hash__");
        Py_DECREF(dict);
        if (!saved) {
            PyErr_SetString(PyExc_RuntimeError, "set_identity_hashing: object.__dict__ has no __hash__");
            return nullptr;
        }
        s.saved_object_hash = Py_NewRef(saved);
        if (walk_and_patch(&PyBaseObject_Type) < 0 || set_object_dict_hash(s.hash_descr) < 0) {
            PyObject* exc = fetch_exception();
            for (PyTypeObject* tp : s.patched) tp->tp_hash = s.original;
            s.patched.clear();
            for (PyObject* r : s.patched_refs) Py_DECREF(r);
            s.patched_refs.clear();
            restore_exception(exc);
            Py_CLEAR(s.saved_object_hash);
            clear_session(s);
            return nullptr;
        }
        s.enabled = true;
        if (snapshot_live_objects() < 0) return nullptr;
    } else {
        clear_session(s);
        for (PyTypeObject* tp : s.patched) tp->tp_hash = s.original;
        s.patched.clear();
        for (PyObject* r : s.patched_refs) Py_DECREF(r);
        s.patched_refs.clear();
        // Types created while on may have inherited our tp_hash: find them.
        std::vector<PyTypeObject*> stack{&PyBaseObject_Type};
        int rc = set_object_dict_hash(s.saved_object_hash);
        Py_CLEAR(s.saved_object_hash);
        s.enabled = false;
        if (rc < 0) return nullptr;
        while (!stack.empty()) {
            PyTypeObject* tp = stack.back();
            stack.pop_back();
            if (PyType_IsSubtype(tp, &PyType_Type)) continue;  // never patched (see walk_and_patch)
            if (tp->tp_hash == identity_tp_hash) tp->tp_hash = s.original;
            PyObject* subs = PyObject_CallMethod(reinterpret_cast<PyObject*>(tp), "__subclasses__", nullptr);
            if (!subs) return nullptr;
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(subs); ++i)
                stack.push_back(reinterpret_cast<PyTypeObject*>(PyList_GET_ITEM(subs, i)));
            Py_DECREF(subs);  // types stay alive: each is referenced by its base's subclass list or ours
        }
    }
    Py_RETURN_NONE;
}

PyObject* identity_hashing_enabled(PyObject*, PyObject*) { return PyBool_FromLong(state().enabled); }


// ---------------------------------------------------------------- ids
// Deterministic id() and default reprs (`set_identity_ids`): the same
// per-logical-thread counting as the hashes, in a table of its own (the
// order of first id() calls and of first hashes are unrelated). An id is
// assigned on first use by program code (the session gate's INTERNAL
// phase): 0x7e0000000000 + (thread slot << 32) + (count << 4), so it looks
// like an address and is unique among live objects of a logical thread.
// A first id() in another phase fixes the object's id to its address
// (stable, not deterministic). Objects that cannot be weakly referenced
// (lists, dicts, plain object()) keep their address: there would be no way
// to forget them. The default reprs of objects, functions, generators,
// coroutines and async generators show the same number: the original repr
// with its "0x<address>" replaced.

constexpr uint64_t ID_BASE = 0x7e0000000000ull;

bool next_id(IdentityHashState& s, uint64_t* out) {
    PyObject* tid = PyObject_CallNoArgs(s.thread_id);
    if (!tid) return false;
    uint64_t key;
    if (!thread_key(tid, &key)) { Py_DECREF(tid); return false; }
    PyObject* last = PyDict_GetItemWithError(s.id_counters, tid);  // borrowed
    unsigned long long n = 0;
    if (last) {
        n = PyLong_AsUnsignedLongLong(last);
        if (n == static_cast<unsigned long long>(-1) && PyErr_Occurred()) { Py_DECREF(tid); return false; }
    } else if (PyErr_Occurred()) {
        Py_DECREF(tid);
        return false;
    }
    // Integer thread ids (the main thread is 0) by value, others hashed.
    uint64_t slot = (key < 0x10000ull) ? key : ((key * 0x9E3779B97F4A7C15ull) >> 48) | 0x8000ull;
    uint64_t base = ID_BASE + ((slot & 0xffffull) << 32);
    // A session restarts the counters (pytest --retrace: one per pass)
    // while objects of an earlier one may live on with their ids: an id a
    // live object has is skipped, so two live objects never share one
    // (copy.deepcopy's memo is keyed by id).
    do {
        ++n;
    } while (s.live_ids.count(base + (n << 4)));
    PyObject* next = PyLong_FromUnsignedLongLong(n);
    int rc = next ? PyDict_SetItem(s.id_counters, tid, next) : -1;
    Py_XDECREF(next);
    Py_DECREF(tid);
    if (rc < 0) return false;
    *out = base + (n << 4);
    return true;
}

// The id of obj: 0 with an exception set on failure (never: falls back).
uint64_t lookup_or_assign_id(PyObject* obj) {
    IdentityHashState& s = state();
    auto it = s.ids.find(obj);
    if (it != s.ids.end()) return static_cast<uint64_t>(it->second.hash);
    uint64_t address = reinterpret_cast<uintptr_t>(obj);
    if (!s.ids_enabled || !s.thread_id) return address;
    PyObject* ref = nullptr;
    bool bare = false;
    if (!PyType_SUPPORTS_WEAKREFS(Py_TYPE(obj))) {
        if (!forgotten_on_dealloc(Py_TYPE(obj))) return address;
        auto b = s.bare_ids.find(obj);
        if (b != s.bare_ids.end()) return static_cast<uint64_t>(b->second);
        bare = true;
    } else {
        ref = PyWeakref_NewRef(obj, s.forget_id);
        if (!ref) {
            PyErr_Clear();
            return address;
        }
    }
    uint64_t id = address;
    if (!s.gate || gate_get(s.gate) == INTERNAL) {
        if (!next_id(s, &id)) {
            PyErr_Clear();
            id = address;
        }
    }
    s.live_ids.insert(id);
    if (bare) {
        s.bare_ids.emplace(obj, static_cast<Py_hash_t>(id));
        return id;
    }
    s.ids.emplace(obj, Entry{static_cast<Py_hash_t>(id), ref});
    s.owner_of_idref.emplace(ref, obj);
    return id;
}

PyObject* forget_id_cb(PyObject*, PyObject* ref) {
    IdentityHashState& s = state();
    auto it = s.owner_of_idref.find(ref);
    if (it != s.owner_of_idref.end()) {
        auto entry = s.ids.find(it->second);
        if (entry != s.ids.end()) {
            auto live = s.live_ids.find(static_cast<uint64_t>(entry->second.hash));
            if (live != s.live_ids.end()) s.live_ids.erase(live);
            s.ids.erase(entry);
        }
        s.owner_of_idref.erase(it);
        Py_DECREF(ref);
    }
    Py_RETURN_NONE;
}

PyObject* identity_id(PyObject*, PyObject* obj) {
    return PyLong_FromUnsignedLongLong(lookup_or_assign_id(obj));
}

// repr with the object's address replaced by its id.
PyObject* with_id(PyObject* obj, PyObject* text) {
    if (!text || !PyUnicode_Check(text)) return text;
    IdentityHashState& s = state();
    // A repr made outside program code (a debugger, our reports) shows the
    // id the object has, never fixes one.
    if (s.gate && gate_get(s.gate) != INTERNAL && s.ids.find(obj) == s.ids.end() &&
        s.bare_ids.find(obj) == s.bare_ids.end())
        return text;
    uint64_t id = lookup_or_assign_id(obj);
    uint64_t address = reinterpret_cast<uintptr_t>(obj);
    if (id == address) return text;
    PyObject* real = PyUnicode_FromFormat("%p", reinterpret_cast<void*>(address));
    PyObject* fake = real ? PyUnicode_FromFormat("%p", reinterpret_cast<void*>(id)) : nullptr;
    PyObject* out = fake ? PyUnicode_Replace(text, real, fake, 1) : nullptr;
    Py_XDECREF(real);
    Py_XDECREF(fake);
    Py_DECREF(text);
    return out;
}

PyObject* object_repr_id(PyObject* obj) { return with_id(obj, state().object_repr(obj)); }
PyObject* function_repr_id(PyObject* obj) { return with_id(obj, state().function_repr(obj)); }
PyObject* gen_repr_id(PyObject* obj) { return with_id(obj, state().gen_repr(obj)); }
PyObject* coro_repr_id(PyObject* obj) { return with_id(obj, state().coro_repr(obj)); }
PyObject* asyncgen_repr_id(PyObject* obj) { return with_id(obj, state().asyncgen_repr(obj)); }

PyObject* object_repr_method(PyObject* self, PyObject*) { return object_repr_id(self); }
PyMethodDef forget_id_def = {"_identity_id_forget", forget_id_cb, METH_O, nullptr};
PyMethodDef object_repr_def = {"__repr__", object_repr_method, METH_NOARGS, "Return repr(self)."};

int walk_and_patch_repr(PyTypeObject* tp) {
    IdentityHashState& s = state();
    if (PyType_IsSubtype(tp, &PyType_Type)) return 0;  // classes: no address in their repr
    if (tp->tp_repr == s.object_repr) {
        tp->tp_repr = object_repr_id;
        s.repr_patched.push_back(tp);
        if (tp->tp_flags & Py_TPFLAGS_HEAPTYPE) s.repr_patched_refs.push_back(Py_NewRef(reinterpret_cast<PyObject*>(tp)));
    }
    PyObject* subs = PyObject_CallMethod(reinterpret_cast<PyObject*>(tp), "__subclasses__", nullptr);
    if (!subs) return -1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(subs); ++i) {
        if (walk_and_patch_repr(reinterpret_cast<PyTypeObject*>(PyList_GET_ITEM(subs, i))) < 0) {
            Py_DECREF(subs);
            return -1;
        }
    }
    Py_DECREF(subs);
    return 0;
}

int set_object_dict_repr(PyObject* value) {
    PyObject* dict;
#if PY_VERSION_HEX >= 0x030C0000  // PYVERSIONS: object's dict lives in the interpreter state
    dict = PyType_GetDict(&PyBaseObject_Type);
#else
    dict = Py_NewRef(PyBaseObject_Type.tp_dict);
#endif
    if (!dict) return -1;
    int rc = PyDict_SetItemString(dict, "__repr__", value);
    Py_DECREF(dict);
    PyType_Modified(&PyBaseObject_Type);
    return rc;
}

// keep_live: every live object that could get an id keeps its address as
// its id (an entry, as a first id() outside program code makes). For ids
// switched on in a process whose objects' ids were already taken with the
// real id(): pytest --retrace, where a library imported before the first
// test kept ids (freezegun's `_real_time_object_ids`) and compares them
// with ids taken inside a test.
void keep_address_id(IdentityHashState& s, PyObject* o) {
    if (!PyType_SUPPORTS_WEAKREFS(Py_TYPE(o)) || s.ids.count(o)) return;
    PyObject* ref = PyWeakref_NewRef(o, s.forget_id);
    if (!ref) {
        PyErr_Clear();
        return;
    }
    uint64_t address = reinterpret_cast<uintptr_t>(o);
    s.live_ids.insert(address);
    s.ids.emplace(o, Entry{static_cast<Py_hash_t>(address), ref});
    s.owner_of_idref.emplace(ref, o);
}

int keep_live_ids() {
    PyObject* objs = collector_objects();
    if (!objs) return -1;
    IdentityHashState& s = state();
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(objs); ++i) keep_address_id(s, PyList_GET_ITEM(objs, i));
    Py_DECREF(objs);
    // Static types (datetime.datetime) are not tracked by the collector.
    std::vector<PyTypeObject*> stack{&PyBaseObject_Type};
    while (!stack.empty()) {
        PyTypeObject* tp = stack.back();
        stack.pop_back();
        keep_address_id(s, reinterpret_cast<PyObject*>(tp));
        // type.__subclasses__(tp): tp.__subclasses__() is unbound for metaclasses
        PyObject* subs = PyObject_CallMethod(reinterpret_cast<PyObject*>(&PyType_Type), "__subclasses__", "O",
                                             reinterpret_cast<PyObject*>(tp));
        if (!subs) return -1;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(subs); ++i)
            stack.push_back(reinterpret_cast<PyTypeObject*>(PyList_GET_ITEM(subs, i)));
        Py_DECREF(subs);  // each stays alive: its base's subclass list refers to it
    }
    return 0;
}

PyObject* set_identity_ids(PyObject*, PyObject* args, PyObject* kwargs) {
    static const char* kwlist[] = {"enabled", "keep_live", nullptr};
    PyObject* arg;
    int keep_live = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$p:set_identity_ids", const_cast<char**>(kwlist), &arg,
                                     &keep_live))
        return nullptr;
    int enable = PyObject_IsTrue(arg);
    if (enable < 0) return nullptr;
    IdentityHashState& s = state();
    if (enable == static_cast<int>(s.ids_enabled)) Py_RETURN_NONE;
    if (enable) {
        if (!s.enabled || !s.thread_id) {
            PyErr_SetString(PyExc_RuntimeError,
                            "set_identity_ids: needs identity hashing on with a session (gate=, thread_id=)");
            return nullptr;
        }
        PyObject* dict;
#if PY_VERSION_HEX >= 0x030C0000  // PYVERSIONS
        dict = PyType_GetDict(&PyBaseObject_Type);
#else
        dict = Py_NewRef(PyBaseObject_Type.tp_dict);
#endif
        if (!dict) return nullptr;
        PyObject* saved = PyDict_GetItemString(dict, "__repr__");
        Py_DECREF(dict);
        if (!saved) {
            PyErr_SetString(PyExc_RuntimeError, "set_identity_ids: object.__dict__ has no __repr__");
            return nullptr;
        }
        s.saved_object_repr = Py_NewRef(saved);
        if (walk_and_patch_repr(&PyBaseObject_Type) < 0 || set_object_dict_repr(s.repr_descr) < 0) {
            PyObject* exc = fetch_exception();
            for (PyTypeObject* tp : s.repr_patched) tp->tp_repr = s.object_repr;
            s.repr_patched.clear();
            for (PyObject* r : s.repr_patched_refs) Py_DECREF(r);
            s.repr_patched_refs.clear();
            restore_exception(exc);
            Py_CLEAR(s.saved_object_repr);
            return nullptr;
        }
        if (keep_live && keep_live_ids() < 0) {
            // as if never switched on: the reprs back first
            PyObject* exc = fetch_exception();
            for (PyTypeObject* tp : s.repr_patched) tp->tp_repr = s.object_repr;
            s.repr_patched.clear();
            for (PyObject* r : s.repr_patched_refs) Py_DECREF(r);
            s.repr_patched_refs.clear();
            set_object_dict_repr(s.saved_object_repr);
            Py_CLEAR(s.saved_object_repr);
            restore_exception(exc);
            return nullptr;
        }
        PyFunction_Type.tp_repr = function_repr_id;
        PyGen_Type.tp_repr = gen_repr_id;
        PyCoro_Type.tp_repr = coro_repr_id;
        PyAsyncGen_Type.tp_repr = asyncgen_repr_id;
        s.ids_enabled = true;
    } else {
        s.ids_enabled = false;
        PyFunction_Type.tp_repr = s.function_repr;
        PyGen_Type.tp_repr = s.gen_repr;
        PyCoro_Type.tp_repr = s.coro_repr;
        PyAsyncGen_Type.tp_repr = s.asyncgen_repr;
        for (PyTypeObject* tp : s.repr_patched) tp->tp_repr = s.object_repr;
        s.repr_patched.clear();
        for (PyObject* r : s.repr_patched_refs) Py_DECREF(r);
        s.repr_patched_refs.clear();
        int rc = set_object_dict_repr(s.saved_object_repr);
        Py_CLEAR(s.saved_object_repr);
        if (rc < 0) return nullptr;
        // Types created while on inherited our tp_repr: find them.
        std::vector<PyTypeObject*> stack{&PyBaseObject_Type};
        while (!stack.empty()) {
            PyTypeObject* tp = stack.back();
            stack.pop_back();
            if (PyType_IsSubtype(tp, &PyType_Type)) continue;
            if (tp->tp_repr == object_repr_id) tp->tp_repr = s.object_repr;
            PyObject* subs = PyObject_CallMethod(reinterpret_cast<PyObject*>(tp), "__subclasses__", nullptr);
            if (!subs) return nullptr;
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(subs); ++i)
                stack.push_back(reinterpret_cast<PyTypeObject*>(PyList_GET_ITEM(subs, i)));
            Py_DECREF(subs);
        }
        // Objects keep the ids they got: stable for their lifetime.
    }
    Py_RETURN_NONE;
}

PyObject* identity_ids_enabled(PyObject*, PyObject*) { return PyBool_FromLong(state().ids_enabled); }

PyMethodDef functions[] = {
    {"identity_id", identity_id, METH_O,
     "identity_id(obj) -> int: id(obj), deterministic while set_identity_ids is on (see utils/README.md)"},
    {"set_identity_ids", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(set_identity_ids)),
     METH_VARARGS | METH_KEYWORDS,
     "set_identity_ids(enabled, /, *, keep_live=False): deterministic identity_id() and default reprs (needs an "
     "identity-hashing session); keep_live: objects alive now keep their addresses as ids"},
    {"identity_ids_enabled", identity_ids_enabled, METH_NOARGS, "True while deterministic ids are on"},
    {"identity_hash", identity_hash, METH_O,
     "identity_hash(obj) -> int: the counter-based hash of obj (assigned on first use; the address hash for "
     "objects that cannot be weakly referenced)"},
    {"set_identity_hashing", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(set_identity_hashing)),
     METH_VARARGS | METH_KEYWORDS,
     "set_identity_hashing(enabled, /, *, gate=None, thread_id=None): switch counter-based object.__hash__ on "
     "or off; with gate, only first hashes in its INTERNAL phase take a counter, per thread_id() when given"},
    {"identity_hashing_enabled", identity_hashing_enabled, METH_NOARGS, "True while identity hashing is on"},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

int init_identity_hash(PyObject* module) {
    IdentityHashState& s = state();
    s.original = PyBaseObject_Type.tp_hash;
    if (!s.object_dealloc) s.object_dealloc = PyBaseObject_Type.tp_dealloc;
    if (!s.traceback_dealloc) s.traceback_dealloc = PyTraceBack_Type.tp_dealloc;
    s.forget = PyCFunction_NewEx(&forget_def, nullptr, nullptr);
    if (!s.forget) return -1;
    s.hash_descr = PyDescr_NewMethod(&PyBaseObject_Type, &object_hash_def);
    if (!s.hash_descr) return -1;
    s.object_repr = PyBaseObject_Type.tp_repr;
    s.function_repr = PyFunction_Type.tp_repr;
    s.gen_repr = PyGen_Type.tp_repr;
    s.coro_repr = PyCoro_Type.tp_repr;
    s.asyncgen_repr = PyAsyncGen_Type.tp_repr;
    s.forget_id = PyCFunction_NewEx(&forget_id_def, nullptr, nullptr);
    if (!s.forget_id) return -1;
    s.repr_descr = PyDescr_NewMethod(&PyBaseObject_Type, &object_repr_def);
    if (!s.repr_descr) return -1;
    return PyModule_AddFunctions(module, functions);
}

}  // namespace retrace::utils
