"""A userspace stand-in for ``tc netem`` between network namespaces (this kernel has none).

- ``schedule``: what happens to each packet (pure, seeded, unit-tested);
- ``runner``: the process that moves packets between TUN devices and the schedulers;
- ``stage``: installs the stage in a forwarding namespace (the hook for other labs);
- ``link``: two hosts joined through a stage (the stage test and bench/netem.py);
- ``probe``: numbered, timestamped UDP both ways, to measure what the stage did.
"""
