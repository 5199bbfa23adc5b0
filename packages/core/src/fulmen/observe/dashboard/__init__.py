"""``fulmen dashboard``: a local web dashboard of a training run or a gateway's store.

Training curves updating live, the episode list with filters, each episode's transcript, tool
calls and results, rewards and token viewer (every response token coloured by its logprob,
masked calls shown as masked), two checkpoints side by side on one held-out task, and alarms.

Modules, one concept each: :mod:`~.data` (what every endpoint returns, read with the same
incremental readers as ``fulmen watch``), :mod:`~.curves`, :mod:`~.episodes` (the list and its
filters), :mod:`~.episode` (the episode page), :mod:`~.tokens` (token ids back to text),
:mod:`~.credit` (which calls train, replayed with the run's ``[credit]``), :mod:`~.compare`,
:mod:`~.auth` (the gateway's bearer token) and :mod:`~.server` (aiohttp). The page is
``static/`` (plain HTML and JavaScript; plotly.js is served from the installed ``plotly``
package). Needs the ``dashboard`` extra (``pip install 'fulmen[dashboard]'``).
"""

from __future__ import annotations

from fulmen.observe.dashboard.credit import CreditSource
from fulmen.observe.dashboard.data import DashboardData
from fulmen.observe.dashboard.server import Dashboard
from fulmen.observe.dashboard.tokens import TokenText, find_tokenizer

__all__ = ["CreditSource", "Dashboard", "DashboardData", "TokenText", "find_tokenizer"]
