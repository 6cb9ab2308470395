"""Data and CLI libraries (issue 19)."""
from retrace_testing import assert_faithful, require


def test_sqlalchemy_orm_on_sqlite(scenario):
    require("sqlalchemy")
    s = scenario("""
        import random
        from sqlalchemy import create_engine, select, String
        from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, Session
        class Base(DeclarativeBase):
            pass
        class Item(Base):
            __tablename__ = "items"
            id: Mapped[int] = mapped_column(primary_key=True)
            name: Mapped[str] = mapped_column(String(40))
        engine = create_engine("sqlite:///items.db")
        Base.metadata.create_all(engine)
        with Session(engine) as session:
            session.add_all([Item(name=f"item-{random.randrange(1000)}") for _ in range(3)])
            session.commit()
            print([i.name for i in session.scalars(select(Item).order_by(Item.id))])
    """)
    assert_faithful(s)


def test_celery_task_run_eagerly(scenario):
    require("celery")
    s = scenario("""
        import random
        from celery import Celery
        app = Celery("demo", broker="memory://", backend="cache+memory://")
        app.conf.task_always_eager = True
        @app.task
        def add(x, y):
            return x + y + random.randrange(100)
        result = add.delay(2, 3)
        print(result.get(), result.successful())
    """)
    assert_faithful(s)


def test_pydantic_and_numpy(scenario):
    require("pydantic", "numpy")
    s = scenario("""
        import datetime, random
        import numpy as np
        from pydantic import BaseModel
        class Reading(BaseModel):
            at: datetime.datetime
            values: list[float]
        rng = np.random.default_rng()
        r = Reading(at=datetime.datetime.now(), values=rng.random(3).round(6).tolist())
        print(r.model_dump_json())
        print(np.random.rand(2).round(6).tolist(), random.random())
    """)
    assert_faithful(s)


def test_click_and_rich(scenario):
    require("click", "rich")
    s = scenario("""
        import random, time
        import click
        from rich.console import Console
        from rich.table import Table
        @click.command()
        @click.option("--rows", default=2)
        def main(rows):
            table = Table(title=f"at {time.time():.3f}")
            table.add_column("n"); table.add_column("value")
            for n in range(rows):
                table.add_row(str(n), f"{random.random():.6f}")
            Console(width=60, force_terminal=False).print(table)
        main()
    """)
    assert_faithful(s, "--rows", "3")


def test_time_machine_and_freezegun(scenario):
    # time-machine writes into the C method tables of time.time and
    # datetime.now: under recording it crashed the process (exit 139).
    require("time_machine", "freezegun")
    s = scenario("""
        import datetime, random, time
        import time_machine
        from freezegun import freeze_time
        with time_machine.travel(datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc), tick=False):
            print(time.time(), datetime.datetime.now(datetime.timezone.utc))
        with freeze_time("2021-06-01"):
            print(time.time(), datetime.datetime.now())
        # tick=True: freezegun reads the real datetime.now() while
        # datetime.datetime is its FakeDatetime (a real datetime on the tape)
        with freeze_time("2021-06-01", tick=True):
            now = datetime.datetime.now()
            print(type(now).__name__, now.year, now.microsecond)
        print(time.time() > 1.7e9, random.random())
    """)
    rec = assert_faithful(s)
    assert b"FakeDatetime 2021" in rec.stdout, rec.stdout
