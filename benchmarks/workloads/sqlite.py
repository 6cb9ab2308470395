"""sqlite3 with random data: a table in a temporary database file, N random
rows inserted in batches, then indexed queries and aggregates."""
import os
import random
import sqlite3
import sys
import tempfile

n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
root = tempfile.mkdtemp(prefix="retrace-bench-sqlite-")
path = os.path.join(root, "bench.db")
try:
    con = sqlite3.connect(path)
    con.execute("create table t (id integer primary key, k integer, v real, s text)")
    rows = [(random.randrange(1000), random.random(), format(random.getrandbits(40), "x"))
            for _ in range(n)]
    for start in range(0, n, 1000):
        con.executemany("insert into t (k, v, s) values (?, ?, ?)", rows[start:start + 1000])
        con.commit()
    con.execute("create index t_k on t (k)")
    total, avg = con.execute("select count(*), avg(v) from t").fetchone()
    top = con.execute("select k, count(*) c from t group by k order by c desc, k limit 3").fetchall()
    hits = 0
    for k in range(0, 1000, 7):
        hits += con.execute("select count(*) from t where k = ?", (k,)).fetchone()[0]
    con.close()
    print(f"rows {total} avg {avg!r} top {top} hits {hits}")
finally:
    for name in os.listdir(root):
        os.unlink(os.path.join(root, name))
    os.rmdir(root)
