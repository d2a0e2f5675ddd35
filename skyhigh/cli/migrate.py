"""`python -m skyhigh.cli.migrate`: bring DATABASE_URL's schema to the newest revision.

Every process also does this at start-up; run it by hand to migrate before a rolling deploy.
"""

from __future__ import annotations

from skyhigh.config import get_settings
from skyhigh.store.db import create_engine
from skyhigh.store.migrate import upgrade


def main() -> None:
    settings = get_settings()
    engine = create_engine(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    print("event store schema is up to date")


if __name__ == "__main__":
    main()
