"""docs/events.md is rendered from the contract code: the committed file must be what the code renders now."""

from rmm_monitor.contract import EVENT_TYPES, TOPIC_OF_TYPE, reference

from support.paths import REPO

EVENTS_MD = REPO / "docs" / "events.md"


def test_committed_reference_equals_a_fresh_rendering():
    committed = EVENTS_MD.read_text(encoding="utf-8")
    assert committed == reference.render(), f"stale: run `{reference.COMMAND}` and commit docs/events.md"


def test_every_event_type_has_its_table_under_its_topic():
    text = reference.render()
    for tag, topic in TOPIC_OF_TYPE.items():
        heading = f"\n### `{tag}`\n"
        assert heading in text, f"{tag} has no section"
        section = text[text.index(heading) :]
        assert section.split("\n### ", 2)[1].count(f"Topic `{topic}`") == 1, f"{tag} is not under {topic}"
        assert f'exactly `"{tag}"`' in section
    assert set(TOPIC_OF_TYPE) == set(EVENT_TYPES)


def test_every_declared_field_is_a_row_of_its_table():
    text = reference.render()
    for tag, cls in EVENT_TYPES.items():
        table = text.split(f"\n### `{tag}`\n", 1)[1].split("\n#", 1)[0]
        envelope = text.split("\n## Envelope\n", 1)[1].split("\n## ", 1)[0]
        for name in cls.__struct_fields__:
            assert f"| `{name}` |" in table or f"| `{name}` |" in envelope, f"{tag}.{name} missing"


def test_main_writes_the_file_and_returns_zero(tmp_path):
    out = tmp_path / "docs" / "events.md"
    assert reference.main(["--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == reference.render()
