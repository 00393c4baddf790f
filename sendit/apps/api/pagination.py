"""Pagination of the API (its own module: DRF settings import it while viewsets load)."""

from typing import Any

from django.core.paginator import Paginator
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request

from sendit.apps.api.params import MAX_ID, integer, integer_schema, query_value


class Pagination(PageNumberPagination):
    """`count`, `next`, `previous`, `results`; ?page=N and ?page_size=N (1 to 500).

    DRF ignores a page size it cannot read and answers 404 for any page it cannot read;
    here a value that is not a number in range is 400, and 404 means past the last page.
    """

    page_size_query_param = "page_size"
    max_page_size = 500
    last_page_strings = ()  # ?page=last would be a string where the schema says integer

    def get_page_size(self, request: Request) -> int:
        value = query_value(request, self.page_size_query_param)
        if value is None:
            return self.page_size
        return integer(value, self.page_size_query_param, maximum=self.max_page_size)

    def get_page_number(self, request: Request, paginator: Paginator) -> int:
        value = query_value(request, self.page_query_param)
        return 1 if value is None else integer(value, self.page_query_param)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": self.page_query_param,
                "required": False,
                "in": "query",
                "description": "A page number; past the last page is 404.",
                "schema": integer_schema(1, MAX_ID),
            },
            {
                "name": self.page_size_query_param,
                "required": False,
                "in": "query",
                "description": f"Results per page (default {self.page_size}).",
                "schema": integer_schema(1, self.max_page_size),
            },
        ]
