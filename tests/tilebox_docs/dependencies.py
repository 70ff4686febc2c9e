"""workflows/concepts/tasks.mdx: "Dependencies" and its news example, as in the docs but for the
imports. The news example's ``FetchNews`` asks newsapi.org over the network (and opens a tracing
span): tests/test_tilebox_docs.py runs ``OfflineFetchNews`` for its identifier, which writes the
same file from a canned answer; ``PrintHeadlines`` and ``MostFrequentAuthors`` are the docs'.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tilebox_core import ExecutionContext, Task

# --- Dependencies ---------------------------------------------------------------------------------


class RootTask(Task):
    def execute(self, context: ExecutionContext) -> None:
        first_task = context.submit_subtask(PrintTask("Executing first"))
        second_task = context.submit_subtask(
            PrintTask("Executing second"),
            depends_on=[first_task],
        )
        third_task = context.submit_subtask(  # noqa: F841 - as the docs write it
            PrintTask("Executing last"),
            depends_on=[second_task],
        )


class PrintTask(Task):
    message: str

    def execute(self, context: ExecutionContext) -> None:
        context.logger.info("Print task executed", message=self.message)


# --- the news example -----------------------------------------------------------------------------


class NewsWorkflow(Task):
    category: str
    max_articles: int

    def execute(self, context: ExecutionContext) -> None:
        fetch_task = context.submit_subtask(FetchNews(self.category, self.max_articles))
        context.submit_subtask(PrintHeadlines(), depends_on=[fetch_task])
        context.submit_subtask(MostFrequentAuthors(), depends_on=[fetch_task])


class FetchNews(Task):
    category: str
    max_articles: int

    def execute(self, context: ExecutionContext) -> None:  # pragma: no cover - network
        import httpx

        url = f"https://newsapi.org/v2/top-headlines?category={self.category}&pageSize={self.max_articles}&country=us&apiKey=API_KEY"
        news = httpx.get(url).json()
        # check out our documentation page on caches to learn
        # about a better way of passing data between tasks
        Path("news.json").write_text(json.dumps(news))
        context.logger.info(
            "Fetched news articles",
            category=self.category,
            article_count=len(news["articles"]),
        )


class PrintHeadlines(Task):
    def execute(self, context: ExecutionContext) -> None:
        news = json.loads(Path("news.json").read_text())
        for article in news["articles"]:
            context.logger.info(
                "News headline",
                published_at=article["publishedAt"][:10],
                title=article["title"],
            )


class MostFrequentAuthors(Task):
    def execute(self, context: ExecutionContext) -> None:
        news = json.loads(Path("news.json").read_text())
        authors = [article["author"] for article in news["articles"]]
        for author, count in Counter(authors).most_common():
            context.logger.info("Author article count", author=author, count=count)


CANNED_NEWS = {
    "status": "ok",
    "articles": [
        {"author": "Ada", "title": "Satellite launched", "publishedAt": "2026-03-01T08:00:00Z"},
        {"author": "Grace", "title": "Sentinel-2 images", "publishedAt": "2026-03-02T09:30:00Z"},
        {"author": "Ada", "title": "Orbit raised", "publishedAt": "2026-03-03T10:45:00Z"},
    ],
}


class OfflineFetchNews(Task):
    """``FetchNews`` without the network: the same file, from a canned answer."""

    category: str
    max_articles: int

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "FetchNews", "v0.0"

    def execute(self, context: ExecutionContext) -> None:
        news = {**CANNED_NEWS, "articles": CANNED_NEWS["articles"][: self.max_articles]}
        Path("news.json").write_text(json.dumps(news))
        context.logger.info(
            "Fetched news articles", category=self.category, article_count=len(news["articles"])
        )
