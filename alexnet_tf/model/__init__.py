"""The network: AlexNet as a Keras functional model and what it is made of.

Its layers (local response normalisation, the tower-placed convolutions, dense layers and
pooling: sections 3.3-3.5) on any Keras backend, their formulas in `keras.ops` (`formulas`) and
TensorFlow's faster forms of them (`tf_paths`, imported only on TensorFlow),
`network.build_alexnet` (section 3.5's two towers), the published weights (`weights`, with their
checksums and cache) and Caffe's file formats (`caffe`).

May import: the foundation (`alexnet_tf.paper`, `config`, `errors`, `files`, `hardware`,
`metrics`, `quiet`, `version`) and its own modules; never `data`, `training`, `serving` or
`analysis`.
"""
