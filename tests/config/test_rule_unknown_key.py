from tests.config.common import example, problems


def test_unknown_key_is_rejected_with_file_line_and_path() -> None:
    doc = example()
    doc["healthCheck"]["failureTreshold"] = 3  # typo
    [p] = problems(doc)
    assert p.startswith("t.json:")
    assert "healthCheck.failureTreshold: unknown key" in p
    line = int(p.split(":")[1])
    assert '"failureTreshold"' in __import__("json").dumps(doc, indent=2).splitlines()[line - 1]
