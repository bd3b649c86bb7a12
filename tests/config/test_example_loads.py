from agent.config import load_config_text
from tests.config.common import ENV, EXAMPLE


def test_guide_sample_loads_unchanged_with_its_misspelled_key() -> None:
    text = EXAMPLE.read_text()
    assert '"secttraConfig"' in text  # the guide's spelling, committed as-is
    cfg = load_config_text(text, str(EXAMPLE), ENV)
    t = cfg.model.targets[0]
    assert t.id == "sectra-pacs-prod"
    assert t.sectraConfig.apiEndpoint == "https://pacs-api.hospital.com.au"
    assert t.config.timeout == 30.0  # 30000 ms
    assert t.healthCheck.interval == 30.0 and t.healthCheck.failureThreshold == 3
    assert t.sectraConfig.customHeaders["X-API-Key"] == "key-test"
    assert "key-test" in cfg.secrets and "pw-test" in cfg.secrets
