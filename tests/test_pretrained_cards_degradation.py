"""Model cards say what fits the model: a degradation only for models that learnt one (the conditional GAN's and
the synthetic-image detector's cards said ``- degradation: `null` ``), and the detector's no generator details."""

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


def test_the_detector_card_does_not_read_like_a_generator_card():
    """It had "held-out accuracy: None", "steps: {}" and a validation heading naming an EMA generator."""
    card = render_model_card(PRETRAINED_DIR / "synthetic-detector.safetensors")
    assert "None" not in card and "- steps:" not in card and "EMA generator" not in card
    assert "\n## Validation\n" in card and "held-out results, where measured, are in the notes" in card
    sr = render_model_card(PRETRAINED_DIR / "brain-mr-x2-3d.safetensors")
    assert "## Validation (EMA generator, held-out scans, last evaluation)" in sr and "- steps:" in sr


def test_list_pretrained_factor_is_the_loaded_models_factor():
    """``list_pretrained`` gave ``[2, 2]`` where the loaded model's ``factor`` is ``(2, 2)``: a researcher's
    ``m["factor"] == resolver.factor`` was False for the same model."""
    import medgan

    sr = [m for m in list_pretrained() if m["task"] == "super-resolution"]
    assert len(sr) >= 3
    for m in sr:
        assert m["factor"] == medgan.SuperResolver.from_pretrained(m["name"]).factor, m["name"]
    assert all(m["factor"] is None for m in list_pretrained() if m["task"] == "synthesis")
