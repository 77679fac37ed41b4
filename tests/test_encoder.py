"""The effects encoder (issue 4): contrastive batches, networks, losses, the training loop and `fxlens embed`.

References are independent of the code under test: pyloudnorm for loudness, a loop-by-loop float64 NT-Xent, the
closed-form warm-up/cosine and curriculum schedules, soundfile for what files hold.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
import torch

from fxlens.cli import main
from fxlens.data.pairs import PairBuilder
from fxlens.data.stems import open_dataset
from fxlens.errors import CheckpointError, FxlensError, InvalidAudioError, ParameterError
from fxlens.models import encoder as enc_mod
from fxlens.models.checkpoint import save_checkpoint
from fxlens.models.encoder import FxEncoder, chunk, load_encoder, prepare_audio
from fxlens.train import encoder as train_mod

from test_fxset import stems  # noqa: F401  (module fixture: a tiny dataset in the fxlens layout)

SR = 44100
INSTRUMENTS = ["bass", "piano"]


@pytest.fixture(scope="module")
def text_vectors():
    """Stand-ins for the MiniLM vectors (the tests must not need the text model)."""
    g = torch.Generator().manual_seed(0)
    return torch.nn.functional.normalize(torch.randn(len(INSTRUMENTS), 384, generator=g), dim=-1)


@pytest.fixture(scope="module")
def model(text_vectors):
    torch.manual_seed(0)
    return FxEncoder("small", INSTRUMENTS, text_vectors).eval()


# --- batches ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def builder(stems):  # noqa: F811
    ds = open_dataset(stems, split="train")
    return PairBuilder(ds, batch_size=3, seconds=1.0, max_instruments=2, hard_negatives=2, seed=5)


@pytest.fixture(scope="module")
def cheap_builder(stems):  # noqa: F811
    ds = open_dataset(stems, split="train")
    return PairBuilder(ds, batch_size=3, seconds=1.0, max_instruments=2, hard_negatives=1, seed=5,
                       effects=["gain", "stereo_imager", "delay"])


def test_pair_batch_shapes_loudness_and_mixing(builder):
    b = builder.batch(0)  # the full default effect pool
    B, k = 3, len(b.instruments)
    T = SR
    assert b.mix_a.shape == b.mix_b.shape == (B, 2, T)
    assert b.stems_a.shape == (B, k, 2, T) and b.negatives.shape == (2, 2, T)
    assert b.active.shape == (B, k, len(b.effects)) and bool((b.active.sum(-1) >= 1).all())  # min_effects 1
    # the mixtures are the sums of their stems, at -18 LUFS (pyloudnorm as the reference meter)
    torch.testing.assert_close(b.stems_a.sum(1), b.mix_a, atol=1e-5, rtol=1e-5)
    meter = pyloudnorm.Meter(SR)
    for x in (*b.mix_a, *b.mix_b, *b.negatives):
        assert meter.integrated_loudness(x.T.double().numpy()) == pytest.approx(-18.0, abs=0.05)


def test_pair_batches_are_deterministic(cheap_builder):
    a, b = cheap_builder.batch(1), cheap_builder.batch(1)
    torch.testing.assert_close(a.mix_a, b.mix_a, atol=0, rtol=0)
    torch.testing.assert_close(a.negatives, b.negatives, atol=0, rtol=0)
    assert a.instruments == b.instruments
    c = cheap_builder.batch(2)
    assert not torch.equal(a.mix_a, c.mix_a)


def test_positive_pairs_share_the_chain_not_the_music(stems):  # noqa: F811
    # With the pool reduced to a fixed stereo-width setting, the only difference between A and B is content.
    ds = open_dataset(stems, split="train")
    pb = PairBuilder(ds, batch_size=2, seconds=1.0, max_instruments=1, hard_negatives=1, effects=["stereo_imager"],
                     probabilities={"stereo_imager": 1.0}, param_ranges={"stereo_imager": {"width": (0.0, 0.0)}})
    b = pb.batch(0)
    for x in (b.mix_a, b.mix_b):  # width 0: both channels identical (mono), in both mixtures
        torch.testing.assert_close(x[:, 0], x[:, 1], atol=1e-6, rtol=0)
    assert not torch.allclose(b.mix_a, b.mix_b, atol=1e-3)  # other music


def test_hard_negatives_share_the_music_of_their_item(stems):  # noqa: F811
    ds = open_dataset(stems, split="train")
    pb = PairBuilder(ds, batch_size=2, seconds=1.0, max_instruments=1, hard_negatives=1, effects=["gain"],
                     probabilities={"gain": 1.0})
    b = pb.batch(3)
    # a gain change only rescales, and the mixture is loudness-normalized: the negative equals mixture A
    torch.testing.assert_close(b.negatives[0], b.mix_a[int(b.negative_of[0])], atol=1e-4, rtol=1e-3)


def test_other_song_positives_take_the_music_of_the_previous_item(stems):  # noqa: F811
    # gain-only chains vanish under the mixtures' loudness normalization, so a mixture is its music alone: in
    # other-song mode mixture B of item i is the same-song builder's mixture B of item i - 1, mixture A unchanged
    ds = open_dataset(stems, split="train")
    kw = dict(batch_size=3, seconds=1.0, max_instruments=1, hard_negatives=0, effects=["gain"],
              probabilities={"gain": 1.0}, seed=2)
    same, other = PairBuilder(ds, **kw).batch(4), PairBuilder(ds, positives="other-song", **kw).batch(4)
    torch.testing.assert_close(other.mix_a, same.mix_a, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(other.mix_b, same.mix_b.roll(1, dims=0), atol=1e-4, rtol=1e-3)
    assert not torch.allclose(other.mix_b, same.mix_b, atol=1e-3)
    with pytest.raises(FxlensError, match="unknown positives"):
        PairBuilder(ds, positives="same-bar")


def test_training_refuses_saved_batches_made_with_other_options(stems, tmp_path):  # noqa: F811
    folder = tmp_path / "pairs"
    folder.mkdir()
    torch.save({}, train_mod.saved_path(folder, 0))
    (folder / "pairs.json").write_text('{"seed": 0, "batch_size": 16, "seconds": 2.0, "max_instruments": 4, '
                                       '"hard_negatives": 2}')  # saved before the option: same-song
    cfg = train_mod.EncoderTrainConfig(data_root=str(stems), out_dir=str(tmp_path / "run"), precomputed=str(folder),
                                       positives="other-song")
    with pytest.raises(FxlensError, match="positives same-song \\(run: other-song\\)"):
        train_mod.check_saved_batches(cfg)
    cfg.positives = "same-song"
    train_mod.check_saved_batches(cfg)


# --- networks -----------------------------------------------------------------------------------------------------


def test_prepare_audio_converts_at_the_edge():
    mono = torch.randn(SR // 2)
    x = prepare_audio(mono, SR)
    assert x.shape == (1, 2, SR // 2) and torch.equal(x[0, 0], x[0, 1])
    y = prepare_audio(torch.randn(1, 3, 22050), 22050)
    assert y.shape == (1, 2, 44100)
    with pytest.raises(InvalidAudioError):
        prepare_audio(torch.randn(2, 1000), SR)
    bad = torch.randn(2, SR)
    bad[0, 10] = float("nan")
    with pytest.raises(InvalidAudioError):
        prepare_audio(bad, SR)
    with pytest.raises(ParameterError):
        prepare_audio(torch.randn(1, 1, 2, SR), SR)


def test_chunking_windows():
    x = torch.arange(2 * 5 * 10, dtype=torch.float32).reshape(1, 2, 50)
    L = 2 * SR
    long = torch.randn(2, 2, int(5.2 * SR))
    w, n = chunk(long, 2.0)
    assert n == 3 and w.shape == (6, 2, L)  # 2 full windows + a 1.2 s remainder (>= half a window), padded
    torch.testing.assert_close(w[1], long[0, :, L: 2 * L])
    torch.testing.assert_close(w[3], long[1, :, :L])
    w, n = chunk(torch.randn(1, 2, int(4.5 * SR)), 2.0)
    assert n == 2  # a 0.5 s remainder is dropped
    w, n = chunk(x, 2.0)
    assert n == 1 and w.shape == x.shape


def test_embeddings_are_unit_vectors_and_pooled(model):
    x = torch.randn(2, 2, int(4 * SR)) * 0.1
    e = model.embed(x, SR)
    assert e.shape == (2, 128)
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(2))
    # pooling = normalized mean of the per-window embeddings (computed here window by window)
    with torch.no_grad():
        parts = [model.encoder(x[:, :, i * 2 * SR: (i + 1) * 2 * SR]) for i in range(2)]
    ref = torch.nn.functional.normalize(sum(parts) / 2, dim=-1)
    torch.testing.assert_close(e, ref, atol=1e-5, rtol=1e-4)


def test_text_query_of_known_instrument_needs_no_text_model(model, monkeypatch, text_vectors):
    def refuse(*_):
        raise AssertionError("MiniLM must not load for a known instrument")

    monkeypatch.setattr(enc_mod, "minilm_embed", refuse)
    x = torch.randn(1, 2, SR) * 0.1
    e1 = model.embed(x, SR, query="bass")
    e2 = model.embed(x, SR, query="This is the sound of BASS")
    torch.testing.assert_close(e1, e2)
    with torch.no_grad():
        ref = model.extractor(model.encoder(x), text_vectors[0:1])
    torch.testing.assert_close(e1, ref, atol=1e-5, rtol=1e-4)


def test_audio_query_and_mismatched_queries(model):
    x = torch.randn(3, 2, SR) * 0.1
    e = model.embed(x, SR, query=torch.randn(1, 2, SR) * 0.1)
    assert e.shape == (3, 128)
    with pytest.raises(ParameterError):
        model.embed(x, SR, query=torch.randn(2, 2, SR) * 0.1)


def test_stats_preset_parameter_budget():
    m = FxEncoder("stats", INSTRUMENTS, torch.zeros(2, 384))
    assert 0.5e6 < enc_mod.count_parameters(m.encoder) < 1e6


def test_small_preset_parameter_budget():
    m = FxEncoder("small", [], None)
    assert sum(p.numel() for p in m.parameters()) <= 5_000_000


def test_checkpoint_round_trip_and_kind_check(model, tmp_path):
    save_checkpoint(tmp_path / "enc", model.state_dict(), model.config(), "# card\n")
    again = load_encoder(tmp_path / "enc")
    x = torch.randn(1, 2, SR) * 0.1
    torch.testing.assert_close(again.embed(x, SR), model.embed(x, SR))
    save_checkpoint(tmp_path / "other", {"w": torch.zeros(1)}, {"kind": "recognizer"}, "")
    with pytest.raises(CheckpointError):
        load_encoder(tmp_path / "other")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text(json.dumps(model.config()))
    (tmp_path / "broken" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError):
        load_encoder(tmp_path / "broken")


def test_fxlens_train_average_is_the_mean_of_the_weights(model, text_vectors, tmp_path, capsys):
    torch.manual_seed(7)
    other = FxEncoder("small", INSTRUMENTS, text_vectors).eval()
    save_checkpoint(tmp_path / "a", model.state_dict(), {**model.config(), "step": 10}, "# a\n")
    save_checkpoint(tmp_path / "b", other.state_dict(), {**model.config(), "step": 20}, "# b\n")
    assert main(["train", "average", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "soup")]) == 0
    soup = load_encoder(tmp_path / "soup")  # an ordinary encoder checkpoint
    a, b, s = model.state_dict(), other.state_dict(), soup.state_dict()
    for name, value in s.items():  # reference: numpy mean in float64
        if value.is_floating_point():
            want = (a[name].double().numpy() + b[name].double().numpy()) / 2
            np.testing.assert_allclose(value.numpy(), want, rtol=1e-6, atol=1e-7, err_msg=name)
        else:
            assert torch.equal(value, a[name]), name
    card = (tmp_path / "soup" / "MODEL_CARD.md").read_text()
    assert str(tmp_path / "a") in card and str(tmp_path / "b") in card and "(step 20)" in card
    assert "### Ingredient 2" in card
    # bad input: one line, exit 1, nothing written
    capsys.readouterr()
    save_checkpoint(tmp_path / "rec", {"w": torch.zeros(1)}, {"kind": "recognizer"}, "")
    torch.manual_seed(8)
    save_checkpoint(tmp_path / "other-net", FxEncoder("small", ["bass"], text_vectors[:1]).state_dict(),
                    FxEncoder("small", ["bass"], text_vectors[:1]).config(), "")
    for args, message in ((["a"], "two or more"), (["a", "a"], "twice"), (["a", "rec"], "'recognizer'"),
                          (["a", "other-net"], "another network"), (["a", "missing"], "not a checkpoint")):
        assert main(["train", "average", *[str(tmp_path / x) for x in args], "-o", str(tmp_path / "bad")]) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) <= 2, err
        assert not (tmp_path / "bad").exists()
    (tmp_path / "a-file").write_text("")
    assert main(["train", "average", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "a-file")]) == 1
    err = capsys.readouterr().err
    assert "cannot write a checkpoint folder" in err and "Traceback" not in err


def test_a_run_can_start_from_another_checkpoints_weights(model, text_vectors, tmp_path):
    save_checkpoint(tmp_path / "enc", model.state_dict(), model.config(), "# card\n")
    torch.manual_seed(1)
    fresh = FxEncoder("small", INSTRUMENTS, text_vectors)
    assert not torch.equal(fresh.encoder.fc.weight, model.encoder.fc.weight)
    train_mod.start_from(fresh, tmp_path / "enc")
    for (name, a), b in zip(fresh.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(FxlensError, match="cannot start a 'base' run"):
        train_mod.start_from(FxEncoder("base", INSTRUMENTS, text_vectors), tmp_path / "enc")
    with pytest.raises(FxlensError, match="do not fit"):
        train_mod.start_from(FxEncoder("small", ["bass"], text_vectors[:1]), tmp_path / "enc")


# --- losses and schedules -------------------------------------------------------------------------------------------


def test_nt_xent_matches_a_loop_reference():
    g = torch.Generator().manual_seed(1)
    a = torch.nn.functional.normalize(torch.randn(4, 8, generator=g, dtype=torch.float64), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(4, 8, generator=g, dtype=torch.float64), dim=-1)
    extra = torch.nn.functional.normalize(torch.randn(2, 8, generator=g, dtype=torch.float64), dim=-1)
    losses, hits = train_mod.nt_xent(a, b, 0.1, extra)
    z = [*a, *b]
    cands = [*a, *b, *extra]
    for i in range(8):
        pos = (i + 4) % 8
        sims = [float(z[i] @ c) / 0.1 for j, c in enumerate(cands) if j != i]
        ref = -(float(z[i] @ z[pos]) / 0.1 - math.log(sum(math.exp(s) for s in sims)))
        assert float(losses[i]) == pytest.approx(ref, rel=1e-10)
        best = max((j for j in range(len(cands)) if j != i), key=lambda j: float(z[i] @ cands[j]))
        assert bool(hits[i]) == (best == pos)


def test_schedules_closed_form():
    assert train_mod.lr_at(0, 1000, 100) == pytest.approx(0.01)
    assert train_mod.lr_at(99, 1000, 100) == pytest.approx(1.0)
    assert train_mod.lr_at(550, 1000, 100) == pytest.approx(0.5)
    assert train_mod.lr_at(1000, 1000, 100) == pytest.approx(0.0, abs=1e-12)
    assert train_mod.lambda_inst_at(100, 1000, 0.2, (0.2, 0.5)) == 0.0
    assert train_mod.lambda_inst_at(350, 1000, 0.2, (0.2, 0.5)) == pytest.approx(0.1)
    assert train_mod.lambda_inst_at(900, 1000, 0.2, (0.2, 0.5)) == pytest.approx(0.2)


def test_probability_scheduling_min_max():
    d = train_mod.Difficulty(["eq", "delay", "reverb"], momentum=0.0)
    active = torch.zeros(3, 1, 3, dtype=torch.bool)
    active[0, 0, 0] = active[1, 0, 1] = active[2, 0, 2] = True
    d.update(torch.tensor([1.0, 3.0, 2.0]), active, ["eq", "delay", "reverb"])
    assert d.probabilities() == pytest.approx({"eq": 0.1, "delay": 1.0, "reverb": 0.55})


# --- training loop and CLI ---------------------------------------------------------------------------------------


def _cheap_pool_builder(*args, **kwargs):
    return PairBuilder(*args, effects=["gain", "stereo_imager"], **kwargs)


@pytest.fixture
def offline_training(monkeypatch):
    """Training without the text model, on the test instruments, with a cheap effect pool."""
    monkeypatch.setattr(train_mod, "taxonomy", lambda: INSTRUMENTS)
    monkeypatch.setattr(enc_mod, "minilm_embed", lambda texts: torch.nn.functional.normalize(
        torch.randn(len(texts), 384, generator=torch.Generator().manual_seed(0)), dim=-1))
    monkeypatch.setattr(train_mod, "PairBuilder", _cheap_pool_builder)



def test_train_encoder_runs_saves_and_resumes(stems, tmp_path, offline_training):  # noqa: F811
    n = train_mod.precompute_batches(stems, tmp_path / "pairs", 2, batch_size=2, seconds=1.0, max_instruments=2,
                                     hard_negatives=1, seed=0)
    assert n == 2
    cfg = train_mod.EncoderTrainConfig(data_root=str(stems), out_dir=str(tmp_path / "run"), steps=2, batch_size=2,
                                       seconds=1.0, crop_seconds=0.75, max_instruments=2, hard_negatives=1,
                                       val_batches=1, val_every=1, ckpt_every=1, warmup_steps=1, accelerator="cpu",
                                       precomputed=str(tmp_path / "pairs"), curriculum=(0.0, 0.5))
    history = train_mod.train_encoder(cfg)
    assert history["step"] == 2 and len(history["val"]) == 2
    assert all(math.isfinite(r["loss"]) for r in history["train"])
    enc = load_encoder(tmp_path / "run" / "model")
    assert enc.embed(torch.randn(1, 2, SR) * 0.1, SR).shape == (1, 128)
    assert "fxlens" in (tmp_path / "run" / "model" / "MODEL_CARD.md").read_text()
    cfg.steps = 3
    history = train_mod.train_encoder(cfg)  # resumes at step 2
    assert history["step"] == 3 and [r["step"] for r in history["val"]] == [1, 2, 3]


def test_train_band_statistics_encoder_on_other_song_pairs_with_stem_pairs(stems, tmp_path,  # noqa: F811
                                                                            offline_training):
    train_mod.precompute_batches(stems, tmp_path / "pairs", 2, batch_size=2, seconds=1.0, max_instruments=2,
                                 hard_negatives=1, seed=0, positives="other-song")
    cfg = train_mod.EncoderTrainConfig(data_root=str(stems), out_dir=str(tmp_path / "run"), preset="stats2", steps=2,
                                       batch_size=2, seconds=1.0, crop_seconds=0.75, max_instruments=2,
                                       hard_negatives=1, val_batches=1, val_every=2, ckpt_every=2, warmup_steps=1,
                                       accelerator="cpu", precomputed=str(tmp_path / "pairs"), positives="other-song",
                                       stem_weight=0.5, inst_target="stem", lambda_inst=0.5, curriculum=(0.0, 0.0),
                                       log_every=1)
    history = train_mod.train_encoder(cfg)
    assert history["step"] == 2 and all(math.isfinite(r["stem_loss"]) for r in history["train"])
    last = history["train"][-1]  # the instrument loss is on from the second step (curriculum 0..0)
    assert last["lambda_inst"] == 0.5 and last["inst_loss"] > 0 and math.isfinite(last["inst_loss"])
    enc = load_encoder(tmp_path / "run" / "model")
    assert enc.preset == "stats2" and isinstance(enc.encoder, enc_mod.BandStatsEncoder)
    assert enc.encoder.bn0.num_features == 1264  # version 2 of the statistics; preset "stats" keeps version 1's 624
    assert enc_mod.make_encoder(enc_mod.ENCODER_PRESETS["stats"]).bn0.num_features == 624
    assert enc.embed(torch.randn(1, 2, SR) * 0.1, SR).shape == (1, 128)
    card = (tmp_path / "run" / "model" / "MODEL_CARD.md").read_text()
    assert "positives: other-song" in card and "stem pairs weight 0.5" in card and "the queried stem alone" in card
    with pytest.raises(FxlensError, match="instrument target"):
        train_mod.EncoderTrainConfig(data_root=str(stems), out_dir=str(tmp_path / "x"), inst_target="nope").check()
    # fine-tuning from it without query dropout, the audio query encoder frozen
    tuned = train_mod.EncoderTrainConfig(data_root=str(stems), out_dir=str(tmp_path / "tuned"), preset="stats2",
                                         steps=2, batch_size=2, seconds=1.0, crop_seconds=0.75, max_instruments=2,
                                         hard_negatives=1, val_batches=1, val_every=2, ckpt_every=2, warmup_steps=1,
                                         accelerator="cpu", precomputed=str(tmp_path / "pairs"), positives="other-song",
                                         inst_target="stem", lambda_inst=0.5, curriculum=(0.0, 0.0),
                                         query_dropout=(0.0, 0.0), freeze_query_encoder=True,
                                         init=str(tmp_path / "run" / "model"), log_every=1)
    history = train_mod.train_encoder(tuned)
    assert all(math.isfinite(r["inst_loss"]) for r in history["train"]) and history["train"][-1]["inst_loss"] > 0
    after = load_encoder(tmp_path / "tuned" / "model")
    for (name, a), b in zip(after.query_encoder.state_dict().items(), enc.query_encoder.state_dict().values()):
        assert torch.equal(a, b), name  # weights and batch-norm statistics alike
    assert not torch.equal(after.extractor.net[0].weight, enc.extractor.net[0].weight)
    card = (tmp_path / "tuned" / "model" / "MODEL_CARD.md").read_text()
    assert "no query dropout" in card and "audio query encoder frozen" in card
    # --inst-negatives: the other stems of the pairs join each extraction's negatives. Same weights, batch and
    # draws: every anchor's softmax gains terms in its denominator, so each per-anchor loss can only rise, and
    # the mixture and stem-pair losses are untouched
    batch = torch.load(train_mod.saved_path(tmp_path / "pairs", 0), weights_only=True)
    assert batch["stems_a"].shape[1] == 2  # two instruments: each extraction gets the other stem as negatives
    text_index = {n: i for i, n in enumerate(after.text.instruments)}
    plain_cfg = dataclasses.replace(tuned, inst_negatives=False)
    with_cfg = dataclasses.replace(tuned, inst_negatives=True)
    with_cfg.check()
    with torch.no_grad():
        plain = train_mod.EncoderObjective(after, plain_cfg, text_index)(
            batch, 0.5, torch.Generator().manual_seed(1), torch.device("cpu"), train=False)[1]
        harder = train_mod.EncoderObjective(after, with_cfg, text_index)(
            batch, 0.5, torch.Generator().manual_seed(1), torch.device("cpu"), train=False)[1]
    assert harder["inst_loss"] > plain["inst_loss"]
    assert harder["mix_loss"] == plain["mix_loss"] and harder["stem_loss"] == plain["stem_loss"]
    bad = dict(data_root=str(stems), out_dir=str(tmp_path / "x"))
    with pytest.raises(FxlensError, match="needs --inst-target stem"):
        train_mod.EncoderTrainConfig(**bad, inst_negatives=True).check()
    with pytest.raises(FxlensError, match="needs --init"):
        train_mod.EncoderTrainConfig(**bad, freeze_query_encoder=True).check()
    train_mod.EncoderTrainConfig(**bad, freeze_query_encoder=True, lambda_inst=0.0).check()  # nothing uses it
    with pytest.raises(FxlensError, match="query dropout"):
        train_mod.EncoderTrainConfig(**bad, query_dropout=(0.5, 1.0)).check()


def test_extractor_inputs_and_a_frozen_encoder_run_that_trains_the_extractor_alone(stems, tmp_path,  # noqa: F811
                                                                                      offline_training):
    torch.manual_seed(3)
    start = FxEncoder("stats2", INSTRUMENTS, enc_mod.minilm_embed(INSTRUMENTS)).eval()
    save_checkpoint(tmp_path / "start", start.state_dict(), start.config(), "# start\n")
    mel = start.encoder.mel(torch.randn(3, 2, SR) * 0.1)
    with torch.no_grad():
        for source, width in (("embedding", 128), ("hidden", 512), ("statistics", 1264), ("film", 1264)):
            e, src = start.encoder.represent(mel, source)
            torch.testing.assert_close(e, start.encoder.embed_mel(mel))  # one pass, the same embedding
            assert src.shape == (3, width) == (3, start.encoder.source_size(source))
            torch.testing.assert_close(start.encoder.source(mel, source), src)  # alone, the same
        torch.testing.assert_close(start.encoder.represent(mel, "statistics")[1],
                                   start.encoder.bn0(enc_mod.band_statistics(mel, 2)))
    with pytest.raises(ParameterError, match="cannot give the extractor 'statistics'"):
        FxEncoder("small", INSTRUMENTS, extractor_input="statistics")
    with pytest.raises(ParameterError, match="unknown extractor input"):
        FxEncoder("stats2", INSTRUMENTS, extractor_input="nope")
    # an untrained FiLM extractor returns the mixture embedding, whatever the query
    film = FxEncoder("stats2", INSTRUMENTS, enc_mod.minilm_embed(INSTRUMENTS), extractor_input="film").eval()
    film.encoder.load_state_dict(start.encoder.state_dict())
    clip = torch.randn(2, 2, SR) * 0.1
    torch.testing.assert_close(film.embed(clip, SR, query="bass"), start.embed(clip, SR))
    train_mod.precompute_batches(stems, tmp_path / "pairs", 2, batch_size=2, seconds=1.0, max_instruments=2,
                                 hard_negatives=1, seed=0, positives="other-song")
    x = torch.randn(2, 2, SR) * 0.1
    for source in ("hidden", "statistics", "film", "mask"):
        cfg = train_mod.EncoderTrainConfig(
            data_root=str(stems), out_dir=str(tmp_path / source), preset="stats2", steps=2, batch_size=2,
            seconds=1.0, crop_seconds=0.75, max_instruments=2, hard_negatives=1, val_batches=1, val_every=2,
            ckpt_every=2, warmup_steps=1, accelerator="cpu", precomputed=str(tmp_path / "pairs"),
            positives="other-song", inst_target="stem", inst_negatives=True, query_dropout=(0.0, 0.0),
            text_query_prob=0.5, freeze_query_encoder=True, freeze_encoder=True, extractor_input=source,
            recon_weight=1.0 if source == "mask" else 0.0, init=str(tmp_path / "start"), log_every=1)
        history = train_mod.train_encoder(cfg)
        assert all(r["lambda_inst"] == 1.0 and math.isfinite(r["inst_loss"]) for r in history["train"])
        assert all((r["recon_loss"] > 0) == (source == "mask") for r in history["train"])
        after = load_encoder(tmp_path / source / "model")
        assert after.extractor_input == source and after.config()["extractor_input"] == source
        for part in ("encoder", "query_encoder"):  # weights and batch-norm statistics alike
            for (name, a), b in zip(getattr(after, part).state_dict().items(),
                                    getattr(start, part).state_dict().values()):
                assert torch.equal(a, b), f"{part}.{name}"
        assert (source == "mask" and isinstance(after.extractor, enc_mod.MaskExtractor)
                or after.extractor.net[0].in_features == start.encoder.source_size(source) + 384
                or source == "film" and after.extractor.net[-1].out_features == 2 * 1264)
        assert not torch.equal(after.embed(x, SR, query="bass"), after.embed(x, SR))  # the extractor learned
        torch.testing.assert_close(after.embed(x, SR), start.embed(x, SR))  # the mixture embedding is unchanged
        assert after.embed(x, SR, query="bass").shape == (2, 128)
        card = (tmp_path / source / "model" / "MODEL_CARD.md").read_text()
        assert f"the extractor reads the mixture's {train_mod.EXTRACTOR_WORDS[source]}" in card
    bad = dict(data_root=str(stems), out_dir=str(tmp_path / "x"), preset="stats2")
    with pytest.raises(FxlensError, match="needs --init"):
        train_mod.EncoderTrainConfig(**bad, freeze_encoder=True).check()
    with pytest.raises(FxlensError, match="not with"):
        train_mod.EncoderTrainConfig(**bad, freeze_encoder=True, freeze_query_encoder=True, init="x",
                                     stem_weight=0.5).check()
    with pytest.raises(FxlensError, match="unknown extractor input"):
        train_mod.EncoderTrainConfig(**bad, extractor_input="nope").check()
    with pytest.raises(FxlensError, match="needs --extractor-input mask"):
        train_mod.EncoderTrainConfig(**bad, recon_weight=1.0).check()


def test_mask_extractor_attenuates_the_log_mel_in_decibels(model):
    """The mask extractor's output is the log-mel minus an attenuation >= 0 in units of 60 dB, floored at -80 dB:
    a uniform attenuation of 0.5 units is the log-mel of the audio 30 dB quieter (`log_mel` as the reference)."""
    torch.manual_seed(0)
    mask = enc_mod.MaskExtractor()
    x = torch.randn(2, 2, SR // 2) * 0.1
    mel, q = model.encoder.mel(x), torch.randn(2, 384)
    with torch.no_grad():
        assert mel.shape[2] == model.encoder.source_size("mask")
        att = mask.attenuation(mel, q)
        assert att.shape == mel.shape and bool((att > 0).all())
        out = mask(mel, q)
        assert bool((out <= mel).all()) and bool((out >= -1.0).all())
        torch.testing.assert_close(att, torch.full_like(att, math.log1p(math.exp(-2.0))))  # ~7.6 dB untrained
        mask.out.bias.fill_(math.log(math.expm1(0.5)))  # softplus = 0.5 units = 30 dB, whatever the input
        torch.testing.assert_close(mask(mel, q), model.encoder.mel(x * 10 ** (-30 / 20)), atol=1e-4, rtol=0)
        # match_power: the log-mel of the audio 20 dB quieter, brought back to the original's power, is the
        # original's (bins that fell to the floor stay there: none here); a silent item stays silent
        quiet = model.encoder.mel(x * 0.1)
        torch.testing.assert_close(enc_mod.match_power(quiet, mel), mel, atol=1e-4, rtol=0)
        floor = torch.full_like(mel, -1.0)
        torch.testing.assert_close(enc_mod.match_power(floor, mel), floor)
    # an untrained mask extractor keeps the mixture embedding, nearly: 7.6 dB less everywhere, brought back up
    net = FxEncoder("stats2", INSTRUMENTS, enc_mod.minilm_embed(INSTRUMENTS), extractor_input="mask").eval()
    e_mix, e_bass = net.embed(x, SR), net.embed(x, SR, query="bass")
    assert float((e_mix * e_bass).sum(-1).min()) > 0.999
    # the reconstruction needs a mixture and its stems cropped alike
    gen = torch.Generator().manual_seed(0)
    a, start = train_mod._crop(torch.arange(20.0).expand(1, 20), 5, gen)
    b, same = train_mod._crop(torch.arange(20.0).expand(1, 20) * 2, 5, gen, start)
    assert same == start and torch.equal(b, 2 * a)


def test_train_encoder_interleaves_full_mix_batches_of_real_tracks(stems, tmp_path, offline_training):  # noqa: F811
    """Batches of a tracks dataset (one "mix" stem per song) train the mixture objective alone, a share of steps."""
    import soundfile as sf

    from test_fxset import SR as FX_SR, notes

    tracks = tmp_path / "music"
    for i in range(6):  # the sum of two stems of the toy set's kind: full mixes without stems
        (tracks / "train").mkdir(parents=True, exist_ok=True)
        sf.write(str(tracks / "train" / f"t{i}.wav"), notes(4.0, 110.0 * (1 + i % 3), 300 + i, 2), FX_SR)
    (tracks / "tracks.json").write_text('{"layout": "tracks"}')
    common = dict(batch_size=2, seconds=1.0, hard_negatives=1, seed=0, positives="other-song")
    train_mod.precompute_batches(stems, tmp_path / "pairs", 2, max_instruments=2, **common)
    train_mod.precompute_batches(tracks, tmp_path / "tracks", 2, max_instruments=4, **common)
    batch = torch.load(train_mod.saved_path(tmp_path / "tracks", 0), weights_only=True)
    assert batch["instruments"] == ["mix"] and batch["stems_a"].shape[1] == 1
    cfg = train_mod.EncoderTrainConfig(data_root=str(stems), out_dir=str(tmp_path / "run"), preset="stats2", steps=6,
                                       batch_size=2, seconds=1.0, crop_seconds=0.75, max_instruments=2,
                                       hard_negatives=1, val_batches=1, val_every=6, ckpt_every=6, warmup_steps=1,
                                       accelerator="cpu", precomputed=str(tmp_path / "pairs"), positives="other-song",
                                       tracks=str(tmp_path / "tracks"), tracks_share=0.5, lambda_inst=0.5,
                                       curriculum=(0.0, 0.0), stem_weight=0.5, log_every=1)
    history = train_mod.train_encoder(cfg)
    full = [r for r in history["train"] if r.get("full_mix")]
    rendered = [r for r in history["train"] if not r.get("full_mix")]
    # which steps take a track batch: torch.rand under (seed * 1_000_003 + step), the rule the docstring states
    expect = [float(torch.rand((), generator=torch.Generator().manual_seed(step))) < 0.5 for step in range(6)]
    assert [bool(r.get("full_mix")) for r in history["train"]] == expect
    assert full and rendered and all(math.isfinite(r["loss"]) for r in history["train"])
    assert all(r["loss"] == r["mix_loss"] and "inst_loss" not in r for r in full)  # the mixture objective alone
    assert all("inst_loss" in r for r in rendered)
    card = (tmp_path / "run" / "model" / "MODEL_CARD.md").read_text()
    assert "full-mix batches of real tracks" in card and "share 0.5" in card
    bad = dict(data_root=str(stems), out_dir=str(tmp_path / "x"), tracks=str(tmp_path / "tracks"))
    with pytest.raises(FxlensError, match="needs --precomputed"):
        train_mod.EncoderTrainConfig(**bad).check()
    with pytest.raises(FxlensError, match="tracks-share"):
        train_mod.EncoderTrainConfig(**bad, precomputed=str(tmp_path / "pairs"), tracks_share=1.0).check()
    with pytest.raises(FxlensError, match="other options"):  # made with another segment length
        train_mod.check_saved_batches(train_mod.EncoderTrainConfig(**bad, precomputed=str(tmp_path / "pairs"),
                                                                   seconds=2.0, crop_seconds=1.0))


def test_cli_embed_writes_npy_and_json(model, tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "enc", model.state_dict(), model.config(), "# card\n")
    wav = tmp_path / "a.wav"
    sf.write(str(wav), (np.random.default_rng(0).standard_normal((SR, 2)) * 0.1).astype(np.float32), SR)
    assert main(["embed", str(wav), str(wav), "--model", str(tmp_path / "enc"), "--out", str(tmp_path / "e.npy")]) == 0
    e = np.load(tmp_path / "e.npy")
    assert e.shape == (2, 128) and np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert main(["embed", str(wav), "--model", str(tmp_path / "enc"), "--query", "bass",
                 "--out", str(tmp_path / "e.json")]) == 0
    doc = json.loads((tmp_path / "e.json").read_text())
    assert doc["query"] == "bass" and len(doc["embeddings"][0]) == 128


def test_cli_embed_bad_input(model, tmp_path, capsys):
    save_checkpoint(tmp_path / "enc", model.state_dict(), model.config(), "# card\n")
    out = tmp_path / "e.npy"
    assert main(["embed", str(tmp_path / "missing.wav"), "--model", str(tmp_path / "enc"), "--out", str(out)]) == 1
    assert "error:" in capsys.readouterr().err and not out.exists()
    silent = tmp_path / "short.wav"
    sf.write(str(silent), np.zeros((100, 2), dtype=np.float32), SR)
    assert main(["embed", str(silent), "--model", str(tmp_path / "enc"), "--out", str(out)]) == 1
    assert not out.exists()
    assert main(["embed", str(silent), "--out", str(tmp_path / "e.txt")]) == 1
    assert main(["embed", str(silent), "--model", str(tmp_path), "--out", str(out)]) == 1  # not a checkpoint
    err = capsys.readouterr().err
    assert "Traceback" not in err


def test_silent_audio_is_refused(model):
    with pytest.raises(InvalidAudioError):
        model.embed(torch.zeros(2, SR), SR)


def test_cli_bench_speed(model, tmp_path):
    save_checkpoint(tmp_path / "enc", model.state_dict(), model.config(), "# card\n")
    out = tmp_path / "speed.json"
    assert main(["bench", "speed", "--model", str(tmp_path / "enc"), "--seconds", "1", "--batch", "1",
                 "--repeats", "1", "--part", "encoder", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {r["case"].split(" ")[0] for r in rows} == {"mixture", "text", "audio"}
    assert all(r["x_real_time"] > 0 for r in rows)


def test_train_encoder_builds_batches_on_the_fly(stems, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(train_mod, "taxonomy", lambda: INSTRUMENTS)
    monkeypatch.setattr(train_mod, "PairBuilder", _cheap_pool_builder)
    cfg = train_mod.EncoderTrainConfig(data_root=str(stems), out_dir=str(tmp_path / "run"), steps=2, batch_size=2,
                                       seconds=1.0, crop_seconds=0.75, max_instruments=2, hard_negatives=1,
                                       val_batches=1, val_every=2, ckpt_every=2, warmup_steps=1, accelerator="cpu",
                                       workers=0, schedule_every=1)
    monkeypatch.setattr(enc_mod, "minilm_embed", lambda texts: torch.nn.functional.normalize(
        torch.randn(len(texts), 384, generator=torch.Generator().manual_seed(0)), dim=-1))
    history = train_mod.train_encoder(cfg)
    assert history["step"] == 2
    # probability scheduling ran and stayed within [0.1, 1]
    assert history["probabilities"] and all(0.1 - 1e-9 <= p <= 1.0 + 1e-9 for p in history["probabilities"].values())


def test_cli_training_bad_data_writes_nothing(stems, tmp_path, capsys):  # noqa: F811
    assert main(["data", "pairs", str(tmp_path / "pairs"), "--data-dir", str(tmp_path / "missing")]) == 1
    assert not (tmp_path / "pairs").exists()
    (tmp_path / "empty").mkdir()
    assert main(["train", "encoder", "--out", str(tmp_path / "run"), "--data-dir", str(stems),
                 "--precomputed", str(tmp_path / "empty"), "--steps", "1"]) == 1
    assert not (tmp_path / "run").exists()
    assert main(["train", "encoder", "--out", str(tmp_path / "run"), "--data-dir", str(stems),
                 "--init", str(tmp_path / "missing"), "--steps", "1"]) == 1
    assert not (tmp_path / "run").exists()
    for bad in (["--query-dropout", "lots"], ["--query-dropout", "0.5,1"], ["--freeze-query-encoder"]):
        assert main(["train", "encoder", "--out", str(tmp_path / "run"), "--data-dir", str(stems), "--steps", "1",
                     *bad]) == 1
    assert not (tmp_path / "run").exists()
    err = capsys.readouterr().err
    assert err.count("error:") == 6 and "Traceback" not in err


# --- AFx-Rep-style baseline objective ----------------------------------------------------------------------------


def test_classify_objective_targets_and_loss_match_a_loop_reference(model):
    """BCE over (instrument, effect) for the instruments present only, against a plain loop over the labels."""
    from fxlens.data.pairs import PAIR_POOL

    text_index = {n: i for i, n in enumerate(INSTRUMENTS)}
    cfg = train_mod.EncoderTrainConfig(data_root="-", out_dir="-", objective="classify", crop_seconds=2.0)
    torch.manual_seed(0)
    head = train_mod.EffectHead(128, len(INSTRUMENTS), len(PAIR_POOL))
    objective = train_mod.ClassifyObjective(model, head, cfg, text_index)
    g = torch.Generator().manual_seed(3)
    B = 3
    effects = list(reversed(PAIR_POOL))  # a batch may list its effects in any order
    active = torch.rand(B, 1, len(effects), generator=g) < 0.5
    batch = {"mix_a": torch.randn(B, 2, 64, 20, generator=g), "mix_b": torch.randn(B, 2, 64, 20, generator=g),
             "active": active, "instruments": ["piano"], "effects": effects}
    loss, metrics, item_loss = objective(batch, 0.0, torch.Generator().manual_seed(0), torch.device("cpu"),
                                         train=False)
    with torch.no_grad():
        logits = head(model.encoder.embed_mel(torch.cat([batch["mix_a"], batch["mix_b"]]))).double()
    total, count = 0.0, 0
    for i in range(2 * B):
        for j, name in enumerate(effects):
            y = float(active[i % B, 0, j])
            z = float(logits[i, INSTRUMENTS.index("piano"), PAIR_POOL.index(name)])
            p = 1 / (1 + math.exp(-z))
            total += -(y * math.log(p) + (1 - y) * math.log(1 - p))
            count += 1
    assert float(loss.detach()) == pytest.approx(total / count, rel=1e-5)
    assert item_loss.shape == (B,) and 0.0 <= metrics["cls_acc"] <= 1.0 and "mix_acc" in metrics


def test_train_encoder_classify_objective_runs_and_resumes(stems, tmp_path, offline_training):  # noqa: F811
    train_mod.precompute_batches(stems, tmp_path / "pairs", 2, batch_size=2, seconds=1.0, max_instruments=2,
                                 hard_negatives=1, seed=0)
    cfg = train_mod.EncoderTrainConfig(data_root=str(stems), out_dir=str(tmp_path / "run"), steps=2, batch_size=2,
                                       seconds=1.0, crop_seconds=0.75, max_instruments=2, hard_negatives=1,
                                       val_batches=1, val_every=1, ckpt_every=1, warmup_steps=1, accelerator="cpu",
                                       precomputed=str(tmp_path / "pairs"), objective="classify")
    history = train_mod.train_encoder(cfg)
    assert history["step"] == 2 and {"cls_loss", "cls_acc", "mix_acc"} <= set(history["val"][-1])
    assert "AFx-Rep-style" in (tmp_path / "run" / "model" / "MODEL_CARD.md").read_text()
    assert load_encoder(tmp_path / "run" / "model").embed(torch.randn(1, 2, SR) * 0.1, SR).shape == (1, 128)
    cfg.steps = 3
    assert train_mod.train_encoder(cfg)["step"] == 3  # resumes with its head


def test_cli_unknown_objective_is_one_line(tmp_path, capsys):
    assert main(["train", "encoder", "--out", str(tmp_path / "run"), "--objective", "triplet"]) == 1
    err = capsys.readouterr().err
    assert "unknown objective" in err and "Traceback" not in err and not (tmp_path / "run").exists()


def test_benchmark_names_encoders_by_their_training(tmp_path):
    from fxlens.bench.baselines import training_style

    cases = {"a": ({"objective": "classify"}, "AFx-Rep-style"),
             "b": ({"lambda_inst": 0.0, "use_hard_negatives": False}, "FX-Encoder-style"),
             "c": ({"lambda_inst": 0.2, "use_hard_negatives": True}, "Fx-Encoder++"),
             # weight averages (`fxlens train average`) are named by what their ingredients share
             "d": ({"average_of": ["x", "y"], "ingredients": [{"objective": "classify"}] * 2}, "AFx-Rep-style"),
             "e": ({"average_of": ["x", "y"], "ingredients": [{"objective": "classify"}, {}]}, "Fx-Encoder++")}
    for name, (training, expected) in cases.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"kind": "fx_encoder", "training": training}))
        assert training_style(tmp_path / name) == expected
    assert training_style(tmp_path / "missing") == "Fx-Encoder++"
