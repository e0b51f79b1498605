"""GANs, interpreted on ConceptWorld, where every concept is known per pixel.

A DCGAN generator trained on ConceptWorld ships with seethrough (``load_model("conceptworld_gan")``,
``seethrough train-gan`` reproduces it), with a segmenter that labels its images
(``load_model("conceptworld_segmenter")``). The modules:

* ``training``: ``train_gan``, the generator's card; ``quality``: a Fréchet distance on
  ConceptNet features and class shares;
* ``world``: ``GeneratedWorld``, generated images as a concept dataset, so that
  ``dissect(generator, layers, GeneratedWorld(...))`` is GAN Dissection (Bau et al. 2019);
* ``interventions``: ablation, insertion and artifact units, measured;
* ``attributes`` and ``directions``: InterFaceGAN's boundaries, walks, conditional manipulation,
  and which layer controls what;
* ``inversion``: optimisation, a learned encoder, with and without the prior's range;
* ``prior``: the generator's latent as a feature-visualization parameterization;
* ``section``: the report's GAN section.

Import the parts from their modules; this package imports nothing heavy.
"""
