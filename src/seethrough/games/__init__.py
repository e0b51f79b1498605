"""Image reference games: a speaker that learns what its listener can see, and what that reveals.

The game of Corona, Alaniz & Akata (NeurIPS 2019) on ConceptWorld, where every attribute is
known: a speaker sees a target and K distractors and names attributes (shape, colour, texture
of the main object, the scene); a listener who perceives only some of them picks an image.
The adaptive speaker plays practice rounds with each new listener and keeps an embedding of it;
which attributes it then chooses, and what a probe reads from its embedding, say what the
listener understands. The modules:

* ``attributes``: the vocabulary and each image's true attributes (``image_pool``);
* ``listeners``: perception (ground truth, or a network's features read by probes), blindness,
  the populations, the pick;
* ``game``: rounds, episodes (practice, then evaluation), seeded;
* ``speakers``: the fixed speaker, the adaptive speaker and its REINFORCE training;
* ``measures``: accuracy against practice, attribute use per listener, the embedding probe;
* ``emergent``: free symbols instead of attributes, and their mutual information with concepts;
* ``section``: the report's section (``seethrough games``, ``seethrough demo --sections games``).

Import the parts from their modules; this package imports nothing heavy.
"""
