"""The chapter floor of noisegeom: the numerics of one chapter per module.

Each module carries its chapter's file name, so that a chapter's text, numerics and
tests are found by one name (text → numerics → tests):

* ``chapters/02_minibatch_noise.md`` → ``noisegeom/chapters/ch02_minibatch_noise.py`` → ``tests/chapters/test_ch02_minibatch_noise.py``
* ``chapters/03_measuring_noise_geometry.md`` → ``noisegeom/chapters/ch03_measuring_noise_geometry.py`` → ``tests/chapters/test_ch03_measuring_noise_geometry.py``
* ``chapters/04_linear_models.md`` → ``noisegeom/chapters/ch04_linear_models.py`` → ``tests/chapters/test_ch04_linear_models.py``
* ``chapters/05_two_layer_networks.md`` → ``noisegeom/chapters/ch05_two_layer_networks.py`` → ``tests/chapters/test_ch05_two_layer_networks.py``
* ``chapters/06_directional_alignment.md`` → ``noisegeom/chapters/ch06_directional_alignment.py`` → ``tests/chapters/test_ch06_directional_alignment.py``
* ``chapters/07_stability_and_escape.md`` → ``noisegeom/chapters/ch07_stability_and_escape.py`` → ``tests/chapters/test_ch07_stability_and_escape.py``
* ``chapters/08_cyclical_learning_rates.md`` → ``noisegeom/chapters/ch08_cyclical_learning_rates.py`` → ``tests/chapters/test_ch08_cyclical_learning_rates.py``

A chapter module imports the toolbox (``noisegeom`` itself) only, never another chapter
module; what two chapters share lives in the toolbox, with its tests. Nothing is
imported here, so that ``import noisegeom`` and one chapter's module stay light, and
the toolbox never depends on this floor (``tests/toolbox/test_layout.py`` checks both
rules). Chapter 1 needs no module of its own.
"""
