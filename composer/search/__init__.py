"""Architecture search over a blueprint's ``search.space`` with Optuna."""

from composer.search.study import SearchResult, search

__all__ = ["SearchResult", "search"]
