"""Model cards state a degradation only for models that learnt one: the conditional GAN's and the synthetic-image
detector's cards said ``- degradation: `null` ``."""

from __future__ import annotations

from medgan.infer.pretrained import PRETRAINED_DIR, list_pretrained, render_model_card


def test_only_super_resolution_cards_state_a_degradation():
    tasks = {m["name"]: m["task"] for m in list_pretrained(include_detector=True)}
    assert set(tasks.values()) == {"super-resolution", "synthesis", "synthetic-detection"}
    for name, task in tasks.items():
        card = render_model_card(PRETRAINED_DIR / f"{name}.safetensors")
        lines = [line for line in card.splitlines() if line.startswith("- degradation:")]
        if task == "super-resolution":
            assert len(lines) == 1 and lines[0] != "- degradation: `null`", (name, lines)
        else:
            assert lines == [], (name, lines)
        assert "`null`" not in card.split("## Validation")[0].split("## Training data")[1], name
