"""``benchmarks/torch_text.py``: a GRU and PyTorch's post-norm and pre-norm transformer layers,
char-level, and a word-level LSTM, trained as a user would.

AGD reads all three with no declaration and no warning (the GRU's ``W_ih``/``W_hh`` one factor
of three gates, the post-norm branches forked but in no stream, since every sum is normalised,
the pre-norm branches in a stream of 2·depth + 1 terms); the transformers are causal; a short
run trains and is reproducible; AdamW's schedule ends at zero; bad input is refused by name.
"""
from __future__ import annotations

import warnings

import pytest
import torch

import hyperfree
from hyperfree.data import load_dataset


@pytest.fixture(scope="module")
def tt(load_benchmark):
    return load_benchmark("torch_text")


def _report(model) -> dict[str, str]:
    """Each parameter's line of AGD's kinds report, after one step (kinds still pending are
    read from that forward)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to declare, nothing to warn about
        opt = hyperfree.AGD(model)
        model(torch.zeros(2, 8, dtype=torch.long)).sum().backward()
        opt.step()
    rows = opt.kinds_report().split("\n\n")[0].splitlines()[1:]
    return {r.split()[0]: r for r in rows}


def test_agd_reads_the_three_models_with_no_declaration(tt):
    gru = _report(tt.build("gru", 30))
    for name in ("rnn.weight_ih_l0", "rnn.weight_hh_l1"):  # x · W_ih + h · W_hh: one factor
        assert " linear(x3, share=2) " in gru[name]
    attn = "blocks.layers.2.self_attn.in_proj_weight"
    post = _report(tt.build("postnorm", 30))
    assert " linear(x3, forks=1) " in post[attn]  # a branch, but every sum is normalised
    pre = _report(tt.build("prenorm", 30))
    assert " linear(x3, forks=1, terms=9) " in pre[attn]  # a stream of 2 * 4 blocks + 1


@pytest.mark.parametrize("name", ["postnorm", "prenorm"])
def test_the_transformers_are_causal_and_in_the_layout_named(tt, name):
    torch.manual_seed(0)
    model = tt.build(name, 30).eval()
    x = torch.randint(0, 30, (2, 16))
    y = x.clone()
    y[:, 10:] = (y[:, 10:] + 7) % 30  # change only the future of position 9
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-5)
    assert not torch.allclose(a[:, 10:], b[:, 10:], atol=1e-3)
    assert model.blocks.layers[0].norm_first == (name == "prenorm")
    assert (model.blocks.norm is not None) == (name == "prenorm")


@pytest.mark.parametrize("name", ["gru", "postnorm"])
def test_a_short_run_trains_and_is_reproducible(tt, text_file, name):
    data = load_dataset("tinyshakespeare", data_dir=str(text_file), seq_len=tt.CONTEXT)
    uniform = float(torch.log(torch.tensor(float(data.info.num_classes))))
    first = tt.run(data, name, "agd", 30, seed=1)
    assert first[0] < uniform - 0.5 and first[1] < uniform - 0.5  # learnt below a uniform guess
    assert tt.run(data, name, "agd", 30, seed=1) == first


def test_first_seed_runs_the_seeds_from_it(tt, text_file, capsys):
    """``--seeds 1 --first-seed 2`` is seed 2's run alone (the third of ``--seeds 3``)."""
    data = load_dataset("tinyshakespeare", data_dir=str(text_file), seq_len=tt.CONTEXT)
    want = tt.run(data, "gru", "agd", 4, seed=2)[0]
    tt.main(["--data", str(text_file), "--model", "gru", "--steps", "4", "--seeds", "1",
             "--first-seed", "2", "--variants", "agd"])
    runs = [line for line in capsys.readouterr().out.splitlines() if " seed " in line]
    assert len(runs) == 1 and runs[0].split(":")[0].split() == ["agd", "seed", "2"]
    assert runs[0].split(":")[1].split()[0] == f"{want:.4f}"


def test_the_word_data_are_the_texts_words_in_windows(tt, text_file):
    """Words of the first 90% of the characters train, the rest test; a word seen fewer than
    WORD_MIN_COUNT times in training is <unk>; targets are the next word."""
    data = tt.word_data(text_file)
    vocab = data.info.vocab
    text = text_file.read_text()
    train_words = tt._WORD.findall(text[:int(0.9 * len(text))])
    assert vocab[0] == "<unk>" and data.info.num_classes == len(vocab)
    assert all(train_words.count(w) >= tt.WORD_MIN_COUNT for w in vocab[1:])
    assert data.train_x.shape[1] == tt.WORD_CONTEXT
    assert torch.equal(data.train_x[0, 1:], data.train_y[0, :-1])
    assert [vocab[i] for i in data.train_x[0]] == [
        w if train_words.count(w) >= tt.WORD_MIN_COUNT else "<unk>"
        for w in train_words[:tt.WORD_CONTEXT]]
    model = tt.build("word", len(vocab))
    assert isinstance(model.rnn, torch.nn.LSTM) and model.embed.weight.shape[1] == 128


def test_the_word_model_runs_from_the_command_line(tt, text_file, capsys):
    tt.main(["--data", str(text_file), "--model", "word", "--steps", "3", "--seeds", "1",
             "--variants", "agd", "--preset", "spectral-lazy"])
    out = capsys.readouterr().out
    assert "# word, 3 steps" in out and "AGD preset spectral-lazy" in out
    assert any(line.startswith("agd            seed 0: ") for line in out.splitlines())


@pytest.mark.parametrize("variant", ["agd", "adamw-0.003"])
def test_calibrate_reads_the_final_model_without_changing_the_run(tt, text_file, capsys,
                                                                   variant):
    """``--calibrate``: loss(1) is the run's own test loss (AGD at its average), loss(T*) no
    more, and the run is the one without it."""
    data = load_dataset("tinyshakespeare", data_dir=str(text_file), seq_len=tt.CONTEXT)
    plain = tt.run(data, "gru", variant, 6, seed=1)
    capsys.readouterr()
    assert tt.run(data, "gru", variant, 6, seed=1, calibrate=True) == plain
    (line,) = [x for x in capsys.readouterr().out.splitlines() if "temperature:" in x]
    one = float(line.split("loss(1) ")[1].split(",")[0])
    best = float(line.split("loss(T*) ")[1].split(",")[0])
    assert one == pytest.approx(plain[0], abs=1e-4) and best <= one


def test_the_curve_reports_the_run_without_changing_it(tt, text_file, capsys):
    data = load_dataset("tinyshakespeare", data_dir=str(text_file), seq_len=tt.CONTEXT)
    plain = tt.run(data, "gru", "agd", 12, seed=2)
    assert tt.run(data, "gru", "agd", 12, seed=2, curve=5) == plain
    lines = [line for line in capsys.readouterr().out.splitlines() if "step" in line]
    assert [line.split(":")[0].strip() for line in lines] == ["step 5", "step 10", "step 12"]
    assert lines[-1].split(" test ")[1].split()[0] == f"{plain[0]:.4f}"  # the final test loss
    assert " eta 0." in lines[0] and " rnn.weight_hh_l0=" in lines[0]
    assert tt.run(data, "gru", "adamw-0.003", 5, seed=2, curve=5)[0] > 0  # no eta: no error
    assert " eta " not in capsys.readouterr().out


def test_linefit_reads_each_step_without_changing_the_run(tt, text_file, capsys):
    """--linefit (§23): the batch's loss again after each step, the run itself unchanged; each
    curve line carries the median ρ and s* since the last, and the run ends with the quarters'
    medians (ρ, s*, coherence: 12 numbers)."""
    data = load_dataset("tinyshakespeare", data_dir=str(text_file), seq_len=tt.CONTEXT)
    plain = tt.run(data, "gru", "agd", 12, seed=2)
    assert tt.run(data, "gru", "agd", 12, seed=2, curve=6, linefit=True) == plain
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.strip().startswith("step")]
    assert len(lines) == 2 and all(" rho " in line and " s* " in line for line in lines)
    rho = float(lines[0].split(" rho ")[1].split()[0])
    assert 0 < rho < 1.5  # a step that lowers the batch's loss, by about its first-order term
    quarters = out.split("medians per quarter): ")[1].splitlines()[0]
    assert len(quarters.strip("[]").split(",")) == 12


def test_the_gain_multiplies_every_step(tt):
    a, b = tt.build("gru", 30), tt.build("gru", 30)
    b.load_state_dict(a.state_dict())
    (oa, *_), (ob, *_) = (tt._optimiser(m, v, 10, seed=0) for m, v in ((a, "agd-model-init"),
                                                                      (b, "agd-model-init@2")))
    start = a.head.weight.detach().clone()
    for m, opt in ((a, oa), (b, ob)):
        m(torch.arange(16).view(2, 8)).square().mean().backward()
        opt.step()
    assert oa.param_groups[0]["gain"] == 1.0 and ob.param_groups[0]["gain"] == 2.0
    moved_a, moved_b = a.head.weight.detach() - start, b.head.weight.detach() - start
    # twice the step, up to the retraction's second-order change of the norm
    assert 1.95 < float(moved_b.norm() / moved_a.norm()) < 2.05
    assert float(torch.nn.functional.cosine_similarity(moved_a.flatten(), moved_b.flatten(),
                                                       dim=0)) > 0.999


def test_param_gain_scales_the_matching_steps_and_the_preset_is_passed_on(tt):
    a, b = tt.build("gru", 30), tt.build("gru", 30)
    b.load_state_dict(a.state_dict())
    oa, *_ = tt._optimiser(a, "agd-model-init", 10, seed=0)
    ob, *_ = tt._optimiser(b, "agd-model-init", 10, seed=0, preset="spectral-average",
                           param_gain=[("rnn.weight_hh*", 0.5)])
    assert oa.preset.name == hyperfree.optim.DEFAULT_PRESET and \
        ob.preset.name == "spectral-average"
    start = {n: p.detach().clone() for n, p in a.named_parameters()}
    for m, opt in ((a, oa), (b, ob)):
        m(torch.arange(16).view(2, 8)).square().mean().backward()
        opt.step()
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())

    def ratio(name):
        return float((pb[name] - start[name]).detach().norm()
                     / (pa[name] - start[name]).detach().norm())
    # the first step of either preset is the same (G has no history to be held by) but for
    # the default's head, which steps 1/ρ times further (its input, the GRU's state, starts
    # far below RMS 1: docs/agd-stability.md §25): the matched tensors move half as far,
    # the others as far
    assert 0.47 < ratio("rnn.weight_hh_l0") < 0.53 and 0.47 < ratio("rnn.weight_hh_l1") < 0.53
    assert 0.99 < ratio("rnn.weight_ih_l0") < 1.01 and ratio("head.weight") < 0.5


def test_adamw_decays_to_zero_and_agd_starts_from_its_own_init_unless_told(tt):
    model = tt.build("gru", 30)
    opt, sched, clip = tt._optimiser(model, "adamw-0.01", 40, seed=0)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert clip == 1.0 and lrs[0] < lrs[2] <= 0.01 and opt.param_groups[0]["lr"] == 0.0
    torch.manual_seed(0)
    a = tt.build("gru", 30)
    before = a.head.weight.detach().clone()
    tt._optimiser(a, "agd-model-init", 40, seed=0)
    assert torch.equal(a.head.weight, before)
    tt._optimiser(a, "agd", 40, seed=0)
    assert not torch.equal(a.head.weight, before)


@pytest.mark.parametrize("argv, message", [
    (["--model", "lstm"], "invalid choice: 'lstm'"),
    (["--model", "gru", "--variants", "agd,sgd"], "'sgd' is not agd, agd-model-init (either"),
    (["--model", "gru", "--variants", "adamw-fast"], "'adamw-fast' has no learning rate"),
    (["--model", "gru", "--variants", "agd@-1"], "the gain after '@' must be a positive number"),
    (["--model", "gru", "--variants", "agd-model-init@x"], "must be a positive number"),
    (["--model", "gru", "--steps", "0"], "--steps must be at least 1, got 0"),
    (["--model", "gru", "--curve", "0"], "--curve must be at least 1, got 0"),
    (["--model", "gru", "--first-seed", "-1"], "--first-seed at least 0, got 3 and -1"),
    (["--model", "gru", "--seeds", "0"], "--seeds must be at least 1"),
    (["--model", "gru", "--preset", "adam"], "invalid choice: 'adam'"),
    (["--model", "gru", "--param-gain", "rnn.w_hh*=0.5"], "rnn.w_hh*: matches no parameter"),
    (["--model", "gru", "--param-gain", "rnn.*=-1"], "give PATTERN=GAIN with a positive gain"),
])
def test_bad_input_is_refused_by_name_before_any_run(tt, text_file, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        tt.main(["--data", str(text_file), *argv])
    assert e.value.code == 2 and message in capsys.readouterr().err
