"""The runtime every function shares, grouped by role (../shared/docs/architecture.md):

- ``core``: what models take and give, whatever the platform: images, results, labels, errors, settings;
- ``models``: the base class of each kind and code shared by a family of models;
- ``runtime``: what models run on: backends, weights, the state store and caches, Redis;
- ``doors``: one package per platform, converting its wire format to and from ``core`` (CVAT: ``doors.cvat``).

Inside a Nuclio image this folder sits beside ``main.py`` (under /opt/nuclio); locally ``tools/fn``
puts the repository root on ``sys.path`` so that ``import common`` works the same way.
"""
