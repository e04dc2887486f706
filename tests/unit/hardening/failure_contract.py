"""What every FailureStore must do; subclasses provide a `failure_store` fixture."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from app.state.attempts import FailureCount, FailureStore

NOW = 1_000_000.0


class FailureStoreContract:
    def test_counts_per_key(self, failure_store: FailureStore) -> None:
        for step in range(3):
            failure_store.add_failure(["a", "b"], NOW + step, 100)
        failure_store.add_failure(["b"], NOW + 3, 100)
        found = failure_store.failures(["a", "b", "c"], NOW + 3, 100)
        assert found == {"a": FailureCount(3, NOW + 2), "b": FailureCount(4, NOW + 3)}

    def test_reset_forgets_one_key(self, failure_store: FailureStore) -> None:
        failure_store.add_failure(["a", "b"], NOW, 100)
        failure_store.reset("a")
        failure_store.reset("never-there")
        assert set(failure_store.failures(["a", "b"], NOW, 100)) == {"b"}

    def test_an_idle_counter_restarts(self, failure_store: FailureStore) -> None:
        failure_store.add_failure(["a"], NOW, 100)
        failure_store.add_failure(["a"], NOW + 1, 100)
        assert failure_store.failures(["a"], NOW + 102, 100) == {}
        failure_store.add_failure(["a"], NOW + 102, 100)
        assert failure_store.failures(["a"], NOW + 102, 100) == {"a": FailureCount(1, NOW + 102)}

    def test_concurrent_failures_are_all_counted(self, failure_store: FailureStore) -> None:
        def fail(_: int) -> None:
            failure_store.add_failure(["shared"], NOW, 100)

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(fail, range(24)))
        assert failure_store.failures(["shared"], NOW, 100)["shared"].count == 24

    def test_an_answer_given_at_once_is_what_failures_says(
        self, failure_store: FailureStore
    ) -> None:
        # failures_now may decline (None: read it in a thread), but never answer otherwise.
        failure_store.add_failure(["a"], NOW, 100)
        expected = failure_store.failures(["a", "b"], NOW, 100)
        assert expected == {"a": FailureCount(1, NOW)}
        assert failure_store.failures_now(["a", "b"], NOW, 100) in (None, expected)
        failure_store.add_failure(["a"], NOW + 1, 100)  # this process's own failure: at once
        assert failure_store.failures_now(["a", "b"], NOW + 1, 100) in (
            None,
            {"a": FailureCount(2, NOW + 1)},
        )
        failure_store.reset("a")
        assert failure_store.failures_now(["a", "b"], NOW + 1, 100) in (None, {})
        assert failure_store.failures_now(["a"], NOW + 200, 100) in (None, {})
