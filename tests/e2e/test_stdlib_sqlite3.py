"""sqlite3: the database is outside data; user functions are callbacks."""
import pytest

from stdlib_support import assert_offline_faithful


def test_queries_on_random_data_file_deleted(scenario):
    s = scenario("""
        import sqlite3, random
        con = sqlite3.connect("data.db")
        con.execute("create table if not exists t (id integer primary key, v real, name text)")
        cur = con.cursor()
        cur.executemany("insert into t (v, name) values (?, ?)",
                        [(random.random(), f"n{random.randint(0, 99)}") for _ in range(20)])
        print("rowcount", cur.rowcount, "lastrowid", cur.lastrowid)
        con.commit()
        cur.execute("select count(*), round(sum(v), 6) from t")
        print(cur.fetchone())
        cur.execute("select id, name, v from t order by v desc limit 3")
        print([d[0] for d in cur.description])
        for row in cur:
            print(row)
        print(cur.execute("select name from t where id = ?", (5,)).fetchall())
        cur.execute("insert into t (v, name) values (1.5, 'x')")
        print("lastrowid", cur.lastrowid, con.total_changes, con.in_transaction)
        con.rollback()
        print(con.execute("select max(id) from t").fetchone(), sqlite3.sqlite_version)
        con.close()
    """)
    assert_offline_faithful(s, delete=["data.db"])


def test_user_functions_aggregates_collations(scenario):
    s = scenario("""
        import sqlite3, random
        con = sqlite3.connect(":memory:")
        calls = []
        def noisy(x):
            calls.append(x)
            return x * 2 + random.random()
        con.create_function("noisy", 1, noisy)
        class Spread:
            def __init__(self):
                self.values = []
            def step(self, v):
                self.values.append(v)
                calls.append(("step", v))
            def finalize(self):
                return max(self.values) - min(self.values)
        con.create_aggregate("spread", 1, Spread)
        con.create_collation("reverse", lambda a, b: (a < b) - (a > b))
        con.execute("create table t (x integer, s text)")
        con.executemany("insert into t values (?, ?)", [(random.randint(0, 1000), c) for c in "abcde"])
        print(con.execute("select noisy(x) from t").fetchall())
        print(calls)
        print(con.execute("select spread(x) from t").fetchone(), calls[-5:])
        print(con.execute("select s from t order by s collate reverse").fetchall())
        try:
            con.execute("select noisy(x, 1) from t")
        except sqlite3.OperationalError as exc:
            print("error", exc)
    """)
    assert_offline_faithful(s)


def test_row_factory_rows(scenario):
    s = scenario("""
        import sqlite3, random
        con = sqlite3.connect(":memory:")
        con.row_factory = sqlite3.Row
        con.execute("create table t (x integer, s text)")
        con.execute("insert into t values (?, ?)", (random.randint(0, 1000), "a"))
        row = con.execute("select x, s from t limit 1").fetchone()
        print(row.keys(), tuple(row), row["x"], row[1], len(row), type(row).__name__)
        rows = con.execute('select x * 2 as "dbl x", s from t').fetchall()
        print([(r["dbl x"], r["s"]) for r in rows], rows[0] == rows[0])
    """)
    assert_offline_faithful(s)


def test_integrity_error_and_context_manager(scenario):
    s = scenario("""
        import sqlite3, random, os
        path = f"db-{os.getpid()}.sqlite"
        with sqlite3.connect(path) as con:
            con.execute("create table u (k text primary key, v integer)")
            key = f"k{random.randint(0, 10**6)}"
            con.execute("insert into u values (?, ?)", (key, 1))
        try:
            with con:
                con.execute("insert into u values (?, ?)", (key, 2))
        except sqlite3.IntegrityError as exc:
            print(type(exc).__name__, exc, key)
        print(con.execute("select * from u").fetchall())
        print(list(con.iterdump())[:3])
        con.close()
        os.remove(path)
    """)
    assert_offline_faithful(s)
