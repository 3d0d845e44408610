"""Nats and bits: losses are computed in nats per character (natural log), and also shown in
bits per character (bpc), the unit char-rnn papers report."""

from __future__ import annotations

import math

LN2 = math.log(2)  # nats in one bit
