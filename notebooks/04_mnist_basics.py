# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Chapter 4, MNIST basics: the pipeline's results
#
# fast.ai's *Deep Learning for Coders*, chapter 4 (`04_mnist_basics`), told over what this
# project's DVC pipeline produced: nothing here re-runs a stage. Files are read through DVC
# (`dvc.api.open`, `dvc.api.read`), params with `dvc.api.params_show()`, metrics and experiments
# with `dvc.api.metrics_show()` and `dvc.api.exp_show()`, tensors and the model with safetensors.
# The chapter's functions come from the library the stages use (`mnist_basics.models`,
# `mnist_basics.baseline`).
#
# Run `dvc repro` first (see README, "Notebook"); the notebook finds the project from where it
# lies.
# On the real MNIST the cells assert the book's figures; on other data they print them.

# %%
import json
import os
import subprocess

import dvc.api
import matplotlib.pyplot as plt
import pandas as pd
import torch
from dvc.repo import Repo
from IPython.display import display
from safetensors.torch import load as load_safetensors

from mnist_basics.baseline import mnist_distance
from mnist_basics.models import batch_accuracy, init_params, linear1, mnist_loss


def read_safetensors(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A safetensors output of the pipeline, through DVC: its tensors and its metadata."""
    with dvc.api.open(path, mode="rb") as f:
        data = f.read()
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    return load_safetensors(data), header.get("__metadata__") or {}


def flatten(d: dict, prefix: str = "") -> dict:
    """{'l1': {'accuracy': 0.95}} -> {'l1.accuracy': 0.95}, as `dvc metrics show` names them."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# Jupyter starts the kernel in notebooks/: the paths below are the project's.
os.chdir(Repo.find_root())
params = dvc.api.params_show()
digits = params["data"]["digits"]
train, _ = read_safetensors("data/tensors/train.safetensors")
valid, _ = read_safetensors("data/tensors/valid.safetensors")
a, b = digits[:2]  # the book's 3 and 7: the first two digits of data.digits

# The real MNIST's 3s and 7s, as the book has them: then the cells assert the book's figures.
counts = {
    split: [int((t["labels"] == d).sum()) for d in (3, 7)]
    for split, t in (("train", train), ("valid", valid))
}
REAL = digits[:2] == [3, 7] and counts == {"train": [6131, 6265], "valid": [1010, 1028]}
print(f"data.digits {digits}; images per split {counts}; real MNIST: {REAL}")

# %% [markdown]
# ## Pixels are numbers
#
# The book opens its second 3 (`threes[1]`, file names sorted as text) and shows a slice of its
# pixels as a DataFrame shaded by value. The pipeline stacks the images in MNIST-index order; the
# `indices` tensor names each image's file, so the book's choice is found again.

# %%
train_a = train["labels"] == a
book_order = sorted(train["indices"][train_a].tolist(), key=lambda i: f"{i}.png")  # ls().sorted()
im3_t = train["images"][train_a & (train["indices"] == book_order[1])][0]
print(f"the book's im3: train/{a}/{book_order[1]}.png")
if REAL:
    assert book_order[1] == 10000
    assert im3_t[4:10, 4:10].tolist() == [
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 29],
        [0, 0, 0, 48, 166, 224],
        [0, 93, 244, 249, 253, 187],
        [0, 107, 253, 253, 230, 48],
        [0, 3, 20, 20, 15, 0],
    ]
im3_t[4:10, 4:10]

# %% tags=["pixels"]
df = pd.DataFrame(im3_t[4:15, 4:22].numpy())
df.style.set_properties(**{"font-size": "6pt"}).background_gradient("Greys")

# %%
plt.figure(figsize=(2, 2))
plt.imshow(im3_t, cmap="Greys")
plt.axis("off")
plt.show()

# %% [markdown]
# ## The stacked tensors and the ideal digits
#
# The tensorize stage wrote each split as one uint8 stack `[N, 28, 28]` with its labels; the book's
# `torch.stack(three_tensors).float()/255` is the slice of one digit, scaled.

# %%
stacked_threes = train["images"][train_a].float() / 255
stacked_sevens = train["images"][train["labels"] == b].float() / 255
print(stacked_threes.shape, stacked_sevens.shape)
if REAL:
    assert stacked_threes.shape == (6131, 28, 28)
    assert stacked_sevens.shape == (6265, 28, 28)

# %%
mean3 = stacked_threes.mean(0)
mean7 = stacked_sevens.mean(0)
fig, axes = plt.subplots(1, 2, figsize=(4, 2))
for ax, img, d in zip(axes, (mean3, mean7), (a, b), strict=True):
    ax.imshow(img, cmap="Greys")
    ax.set_title(f"ideal {d}")
    ax.axis("off")
plt.show()

# %% [markdown]
# ## Pixel similarity, by broadcasting
#
# `mnist_distance` takes the mean absolute difference over the last two axes, so one call
# compares every valid image with an ideal digit: `[N, 28, 28]` against `[28, 28]` broadcasts.
# An image is a 3 when it is nearer the ideal 3 than the ideal 7.

# %%
valid_3_tens = valid["images"][valid["labels"] == a].float() / 255
valid_7_tens = valid["images"][valid["labels"] == b].float() / 255
valid_3_dist = mnist_distance(valid_3_tens, mean3)
print(valid_3_dist.shape, (valid_3_tens - mean3).shape)


def is_3(x: torch.Tensor) -> torch.Tensor:
    return mnist_distance(x, mean3) < mnist_distance(x, mean7)


accuracy_3s = is_3(valid_3_tens).float().mean().item()
accuracy_7s = (1 - is_3(valid_7_tens).float()).mean().item()
mean_accuracy = (accuracy_3s + accuracy_7s) / 2
print(f"accuracy on {a}s {accuracy_3s:.4f}, on {b}s {accuracy_7s:.4f}, mean {mean_accuracy:.4f}")
if REAL:  # the book: (tensor(0.9168), tensor(0.9854), tensor(0.9511))
    assert (round(accuracy_3s, 4), round(accuracy_7s, 4), round(mean_accuracy, 4)) == (
        0.9168,
        0.9854,
        0.9511,
    )

# %% [markdown]
# The baseline stage computed the same with the same function; its metrics agree (with two
# digits: with more, the stage picks the nearest of all the ideal digits).

# %%
baseline = json.loads(dvc.api.read("metrics/baseline.json"))
print(json.dumps(baseline["l1"], indent=1))
if len(digits) == 2:
    assert baseline["l1"]["per_digit"][str(a)] == round(accuracy_3s, 4)
    assert baseline["l1"]["per_digit"][str(b)] == round(accuracy_7s, 4)

# %% [markdown]
# ## Why accuracy cannot be the loss
#
# The train stage's linear model (`linear1` with `init_params`) is in `models/model.safetensors`,
# its spec in the file's metadata. The book nudges one weight, `weights[0] *= 1.0001`, and sees
# the accuracy unchanged: accuracy only moves when a prediction crosses 0.5, so its gradient is
# zero almost everywhere. `mnist_loss`, the sigmoid of the logits measured against the targets,
# moves with every weight that touches an image.

# %%
model, meta = read_safetensors("models/model.safetensors")
spec = json.loads(meta["spec"])
print("model spec:", spec)
if spec["digits"] != digits:  # params.yaml edited since the last `dvc repro`
    print(f"note: the model is of digits {spec['digits']}, params.yaml's are {digits}")
if spec["model"] == "linear" and model["weights"].shape[1] == 1:
    weights, bias = model["weights"].clone(), model["bias"].clone()
    source = "the trained linear model"
    a, b = spec["digits"]  # the model's own first digit is its 1 target
else:  # the chapter's own starting point: a fresh linear1
    torch.manual_seed(params["train"].get("seed", 42))
    weights, bias = init_params((28 * 28, 1)).detach(), init_params(1).detach()
    source = f"init_params (the workspace's model is {spec['model']} with {len(digits)} digits)"

keep = (valid["labels"] == a) | (valid["labels"] == b)
valid_x = valid["images"][keep].float().view(-1, 28 * 28) / 255
valid_y = (valid["labels"][keep] == a).float().unsqueeze(1)  # the first digit is the 1 target


def figures() -> tuple[float, float]:
    preds = linear1(valid_x, weights, bias)
    return batch_accuracy(preds, valid_y).item(), mnist_loss(preds, valid_y).item()


before = figures()
with torch.no_grad():
    weights[0] *= 1.0001  # the book's line
after_book = figures()
ink = valid_x.mean(0).argmax().item()  # the pixel with the most ink on average
with torch.no_grad():
    weights[ink] *= 1.0001
after_ink = figures()
nudges = pd.DataFrame(
    [before, after_book, after_ink],
    columns=["accuracy", "mnist_loss"],
    index=["as trained", "weights[0] *= 1.0001", f"then weights[{ink}] *= 1.0001"],
)
print(source)
with pd.option_context("display.precision", 10):
    display(nudges)
assert after_ink[0] == before[0], "a 0.01% nudge changed the accuracy"
assert after_ink[1] != before[1], "mnist_loss did not move"
if REAL:  # pixel (0, 0) is blank in every MNIST image: the book's weight touches nothing
    assert after_book == before

# %% [markdown]
# The sigmoid squashes any logit into (0, 1), so `mnist_loss` sees a smooth prediction:

# %%
x = torch.linspace(-4, 4, 200)
plt.figure(figsize=(4, 2.5))
plt.plot(x, torch.sigmoid(x))
plt.title("Sigmoid")
plt.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ## Training: the curves and the weights
#
# The train stage writes one row per epoch to a TSV per curve, under
# `metrics/train/plots/metrics/`.

# %%
curves = {}
for name in ("train/loss", "valid/loss", "valid/accuracy"):
    with dvc.api.open(f"metrics/train/plots/metrics/{name}.tsv") as f:
        curves[name] = pd.read_csv(f, sep="\t").set_index("step").iloc[:, 0]
curves = pd.DataFrame(curves)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3))
curves[["train/loss", "valid/loss"]].plot(ax=ax1, title="loss")
curves[["valid/accuracy"]].plot(ax=ax2, title="valid accuracy")
plt.show()
metrics = dvc.api.metrics_show()
assert curves["valid/accuracy"].iloc[-1] == metrics["valid"]["accuracy"]
curves.tail()

# %% [markdown]
# The linear model's weights as a 28x28 map: red pixels vote for the first digit, blue for the
# second.

# %%
if spec["model"] == "linear":
    w = model["weights"][:, 0].view(28, 28)
    lim = w.abs().max().item()
    plt.figure(figsize=(3, 3))
    plt.imshow(w, cmap="bwr", vmin=-lim, vmax=lim)
    plt.title(f"weights: red {a}, blue {b}" if len(spec["digits"]) == 2 else "weights[:, 0]")
    plt.colorbar()
    plt.axis("off")
    plt.show()
else:
    print(f"the model is {spec['model']}: no 28x28 weight map (plots/train/weights.png has it)")

# %% [markdown]
# ## Experiments
#
# Every `dvc exp run` is a row of `dvc.api.exp_show()`: best evaluate accuracy first, with the
# params that differ between the rows.

# %% tags=["experiments"]
# convert_dtypes: an integer column with gaps shows epochs 20, not 20.0
exps = pd.DataFrame(dvc.api.exp_show()).convert_dtypes()
param_keys = set(flatten(params))
metric_keys = set(flatten(metrics))


def key(col: str) -> str:
    return col.split(":", 1)[-1]


param_cols = [c for c in exps if key(c) in param_keys and (":" not in c or c.startswith("params"))]
metric_cols = [c for c in exps if key(c) in metric_keys and c not in param_cols]
accuracy = next(c for c in metric_cols if key(c) == "accuracy")  # metrics/evaluate.json
shown_metrics = [c for c in metric_cols if key(c) in ("l1.accuracy", "valid.accuracy")]
changed = [c for c in param_cols if exps[c].astype(str).nunique() > 1]
for c in (*shown_metrics, accuracy):  # a revision without the metric has a placeholder string
    exps[c] = pd.to_numeric(exps[c], errors="coerce")
exps.insert(0, "name", exps["Experiment"].fillna(exps["rev"]))
experiments = (
    exps[["name", "rev", "typ", *shown_metrics, accuracy, *changed]]
    .sort_values(accuracy, ascending=False)
    .reset_index(drop=True)
)
display(experiments)

# %% [markdown]
# The same figures for two commits side by side: the last two commits, or the only commit and
# the workspace.

# %% tags=["commits"]
commits = subprocess.run(
    ["git", "rev-list", "--first-parent", "--max-count=2", "HEAD"],  # HEAD~1 after a merge too
    capture_output=True,
    text=True,
    check=True,
).stdout.split()
if len(commits) == 2:
    revs = {f"HEAD~1 ({commits[1][:7]})": commits[1], f"HEAD ({commits[0][:7]})": commits[0]}
else:
    print("one commit only: it is compared with the workspace")
    revs = {f"HEAD ({commits[0][:7]})": commits[0], "workspace": None}


def figures_at(rev: str | None) -> tuple[dict, dict]:
    """A revision's metrics and params, flattened; empty where it has none (yet)."""
    try:
        m = dvc.api.metrics_show(rev=rev)
    except Exception as e:  # e.g. a commit from before the first `dvc repro`
        print(f"{(rev or 'workspace')[:7]}: no metrics ({type(e).__name__}: {e})")
        m = {}
    return flatten(m), flatten(dvc.api.params_show(rev=rev))


at = {label: figures_at(rev) for label, rev in revs.items()}
# dtype object: a column of one revision's figures keeps epochs 20 an integer beside 0.9676
side_metrics = pd.DataFrame({label: m for label, (m, _) in at.items()}, dtype=object)
side_params = pd.DataFrame(
    {label: {k: str(v) for k, v in p.items()} for label, (_, p) in at.items()}
)
side_params = side_params[side_params.nunique(axis=1, dropna=False) > 1]
side_by_side = pd.concat({"metrics": side_metrics, "params that differ": side_params})
display(side_by_side)

# %% [markdown]
# ## Further research, answered by this pipeline
#
# The chapter ends with two questions. Both are params of this pipeline; each line below runs as
# a DVC experiment (from a clean workspace: `git checkout params.yaml` between runs, or queue
# them with `--queue`), and then shows up in the experiments table above.
#
# **1. "Create your own implementation of `Learner` from scratch, based on the training loop
# shown in this chapter."** The train stage is that Learner (`src/mnist_basics/learner.py`): the
# book's `calc_grad`, `train_epoch` and `validate_epoch` as methods, one loop for every model,
# loss and optimiser. The book's `simple_net` with it:
#
# ```bash
# dvc exp run -S train.model=simple_net -S train.lr=0.1 -S train.epochs=40
# ```
#
# and with `torch.optim.SGD` and momentum, or Adam, in place of the book's `BasicOptim`:
#
# ```bash
# dvc exp run -S train.optimizer=sgd -S train.momentum=0.9
# dvc exp run -S train.model=cnn -S train.optimizer=adam -S train.lr=0.01 -S train.epochs=6 \\
#   -S train.shuffle=true
# ```
#
# **2. "Complete all the steps in this chapter using the full MNIST datasets (that is, for all
# digits, not just 3s and 7s)."** `data.digits` takes all ten: the download, the ideal digits,
# training (softmax and cross-entropy instead of `mnist_loss`) and the confusion matrix follow.
# The linear model, an MLP and a CNN (README, "Recipes": about 0.93, 0.98 and 0.994):
#
# ```bash
# dvc exp run -S 'data.digits=[0,1,2,3,4,5,6,7,8,9]' -S train.loss_func=cross_entropy \
#   -S train.init_std=0.01 -S train.optimizer=adam -S train.lr=0.001 -S train.shuffle=true
# dvc exp run -S 'data.digits=[0,1,2,3,4,5,6,7,8,9]' -S train.loss_func=cross_entropy \
#   -S train.model=simple_net -S train.hidden=256 -S train.optimizer=adam -S train.lr=0.001 \
#   -S train.shuffle=true
# dvc exp run -S 'data.digits=[0,1,2,3,4,5,6,7,8,9]' -S train.loss_func=cross_entropy \
#   -S train.model=cnn -S train.optimizer=adam -S train.lr=0.01 -S train.epochs=6 \
#   -S train.shuffle=true -S train.schedule=one_cycle
# ```
#
# Then `dvc exp show` (or this notebook, re-run) compares them, and `dvc plots diff` draws their
# curves and confusion matrices side by side.
