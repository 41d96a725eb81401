"""Runtime shared by every function: request parsing, images, shapes, labels, backends, entry points.

Inside a Nuclio image this folder sits beside ``main.py`` (under /opt/nuclio); locally ``tools/fn``
puts the repository root on ``sys.path`` so that ``import common`` works the same way.
"""
