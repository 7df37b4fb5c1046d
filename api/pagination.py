"""`limit` and `offset` on every list (extension), so no list answer grows without bound."""

from typing import Annotated

from fastapi import Depends, Query
from sqlalchemy import Select

MAX_LIMIT = 500


class PageParams:
    def __init__(
        self,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="at most this many items")] = 100,
        offset: Annotated[int, Query(ge=0, le=2**63 - 1, description="skip this many items")] = 0,
    ) -> None:
        self.limit = limit
        self.offset = offset

    def apply(self, query: Select) -> Select:
        return query.limit(self.limit).offset(self.offset)


Page = Annotated[PageParams, Depends()]
