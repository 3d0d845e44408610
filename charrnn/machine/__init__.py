"""The machine a command runs on: its cores and how many threads to use (threads.py; and while
training, thread_policy.py), the device and its memory (device.py, memory.py).

It sits beside config.py and errors.py at the bottom of the house, not in training/, because
training/, sample/, insight/ and bench/ all use it (and the package's own __init__ starts the
load meter): a part may import only the parts below it, so what they share must be below them.
May import: config, errors (and torch, lazily, where a device is needed).
"""
