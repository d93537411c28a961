# %% [markdown]
# # dpq in a notebook
# Differentially private answers as pandas data frames, with their error bars
# and what each one cost. Run cell by cell (VS Code, Jupyter with jupytext) or
# as a script: `python examples/notebook.py`.

# %%
import tempfile
from pathlib import Path

import dpq

root = Path(tempfile.mkdtemp())
data = root / "data"
dpq.init(data)
dpq.generate(2000, 90, root / "logs", seed=7)
for table in ["emoji_catalog", "users", "messages", "calls", "payments"]:
    dpq.ingest(data, table, root / "logs" / f"{table}.csv")  # the data owner's step
s = dpq.Session(data, analyst="notebook")

# %% What would it cost? (spends nothing)
print(s.explain("SELECT date_part('hour', ts) AS hour, COUNT(*) AS messages FROM messages GROUP BY hour", epsilon=0.5)["text"])

# %% Messages per hour of the day, with 95 % intervals
t = s.query("SELECT date_part('hour', ts) AS hour, COUNT(*) AS messages FROM messages GROUP BY hour ORDER BY hour", epsilon=0.5)
df = t.to_pandas()
print(df.head())
print(dpq.privacy(t)["privacy"]["epsilon"], "spent;", dpq.privacy(t)["bias"]["text"])

# %% The favourite emoji of each generation
t = s.query(
    "SELECT u.age_group, m.emoji, COUNT(*) AS uses FROM messages m JOIN users u ON m.user_id = u.user_id "
    "GROUP BY u.age_group, m.emoji",
    epsilon=1,
)
top = t.to_pandas().sort_values("uses", ascending=False).groupby("age_group").head(3)
print(top)

# %% The budget left
print(s.budget())
