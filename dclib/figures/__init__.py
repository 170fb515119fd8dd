"""The book's figures: one module per page, each function drawing one figure from a table dclib computed, so a
notebook holds parameters, a call into dclib, a plot call and a sentence. Functions return the matplotlib
Figure; pyplot is imported inside each module's drawing functions only (it picks a backend on import)."""


def percent_yerr(table) -> list:
    """matplotlib's ``yerr`` ([below, above]) for an accuracy drawn in percent, from a table's accuracy, ci_low and
    ci_high columns."""
    return [100 * (table.accuracy - table.ci_low), 100 * (table.ci_high - table.accuracy)]


def finish(ax, xlabel: str, ylabel: str, title: str, **title_options):
    """Axis labels, title, an 8 pt legend and a tight layout: how a single-panel figure of the book ends.
    Returns the figure."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, **title_options)
    ax.legend(fontsize=8)
    ax.figure.tight_layout()
    return ax.figure
