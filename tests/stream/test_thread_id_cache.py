"""cache_thread_id=True: thread_id() is asked once per thread until
thread_ids_changed(); the events are those of a writer that asks every time
(both backends), and a new id given to a thread is seen at once."""
import threading


def _events(impl, path):
    r = impl.StreamReader(path)
    out = []
    while True:
        try:
            out.append((r.thread, r.read()))
        except EOFError:
            return out


def test_cached_thread_ids_write_the_same_bytes(impl, tmp_path):
    ids = {threading.get_ident(): 0}
    asked = []

    def current():
        asked.append(1)
        return ids[threading.get_ident()]

    paths = []
    for cache in (False, True):
        del asked[:]
        ids.clear()
        ids[threading.get_ident()] = 0
        p = tmp_path / f"c{cache}.bin"
        w = impl.StreamWriter(p, {}, thread_id=current, cache_thread_id=cache, compress=False)
        w.write("a")
        w.write("b")

        def child():
            ids[threading.get_ident()] = "1"
            impl.thread_ids_changed()
            w.write("from child")
        t = threading.Thread(target=child)
        t.start()
        t.join()
        ids[threading.get_ident()] = 7      # the main thread gets another id (a fork's child does)
        impl.thread_ids_changed()
        w.write("c")
        w.close()
        paths.append(p)
        if cache and impl.__name__.endswith("_stream"):
            assert len(asked) == 3          # once per thread and change, not per write
    assert _events(impl, paths[0]) == _events(impl, paths[1])
    assert _events(impl, paths[1]) == [(0, "a"), (0, "b"), ("1", "from child"), (7, "c")]
