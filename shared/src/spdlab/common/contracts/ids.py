"""Row ids as clients send them: positive and within BIGINT, so a lookup never overflows the driver."""

from typing import Annotated

from pydantic import Field

MAX_ROW_ID = 2**63 - 1

RowId = Annotated[int, Field(ge=1, le=MAX_ROW_ID)]
