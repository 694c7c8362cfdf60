"""PNG figures of a comparison, readable without the table."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

GROUPS = [("ndcg@10", "all users"), ("headndcg@10", "head targets"), ("tailndcg@10", "tail targets"),
          ("coldndcg@10", "cold targets")]


def plot_group_ndcg(summary, models, path):
    """Grouped bars: NDCG@10 (mean, std as error bar) per user group, one bar per model."""
    groups = [(k, label) for k, label in GROUPS if any(not np.isnan(summary[m][k]["mean"]) for m in models)]
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * len(groups), 4))
    width = 0.8 / len(models)
    x = np.arange(len(groups))
    for i, model in enumerate(models):
        means = [np.nan_to_num(summary[model][k]["mean"]) for k, _ in groups]
        stds = [np.nan_to_num(summary[model][k]["std"]) for k, _ in groups]  # one seed: no bar
        ax.bar(x + (i - (len(models) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=model)
    ax.set_xticks(x, [label for _, label in groups])
    return _finish(fig, ax, path, "test NDCG@10", "NDCG@10 by the popularity of the user's target item")


def plot_entropy(summary, models, path):
    """Matrix entropy of the item embeddings per popularity quintile (1 = most popular)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for model in models:
        values = summary[model]["entropy_by_quintile"]
        ax.plot(range(1, len(values) + 1), values, marker="o", label=model)
    ax.set_xlabel("item popularity quintile (1 = most popular 20%)")
    return _finish(fig, ax, path, "matrix-based entropy (rho = 1)", "Information in item embeddings by popularity")


def _finish(fig, ax, path, ylabel, title):
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_scatter(scatter, path):
    """2-D PCA of item embeddings, most popular 20% vs least popular 20%, one panel per model."""
    models = [m for m, s in scatter.items() if s]
    if not models:
        return None
    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 3.6), squeeze=False)
    for ax, model in zip(axes[0], models):
        for group, colour in (("tail", "tab:orange"), ("head", "tab:blue")):
            pts = np.asarray(scatter[model][group])
            if len(pts):
                ax.scatter(pts[:, 0], pts[:, 1], s=6, alpha=0.6, c=colour, label=f"{group} 20%")
        ax.set_title(model, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Item embeddings, 2-D PCA: head vs tail items")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
