from tests.config.common import problems

YAML = """\
targets:
  - id: ok-one
    config:
      host: 127.0.0.1
  - id: bad-one
    config:
      host: 127.0.0.1
      port: 70000
agent:
  listen: ":9887"
"""


def test_yaml_errors_point_at_the_line_of_the_key() -> None:
    [p] = problems(None, yaml_text=YAML)
    assert p.startswith("t.yaml:8: targets[1].config.port:")


def test_yaml_syntax_error_has_a_line() -> None:
    [p] = problems(None, yaml_text="targets:\n  - id: [unclosed\n")
    assert p.startswith("t.yaml:") and "not valid YAML" in p
