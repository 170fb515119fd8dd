"""The book's figures: one module per page, each function drawing one figure from a table dclib computed, so a
notebook holds parameters, a call into dclib, a plot call and a sentence. Functions return the matplotlib
Figure; pyplot is imported inside each module's drawing functions only (it picks a backend on import)."""
