"""The mutation catalogue: what the paper and this project promise, each broken on purpose.

Each entry names a promise, a one-line (or one-statement) mutation of the code
that breaks it, and the tests that must then fail. `run_mutations.py` applies
each to a scratch copy of the repository, runs those tests, and prints a table
of caught and missed. It runs on demand (minutes), not in CI: docs/TESTING.md.
Not collected by pytest (the name does not start with test_).
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Mutation:
    name: str
    promise: str          # what must hold, and where it comes from
    path: str             # the file mutated, from the repository root
    old: str              # exact text, found exactly once
    new: str
    tests: tuple          # pytest arguments: files, node ids or -k expressions


CATALOGUE = (
    Mutation("path_flags_unchecked", "a path flag of the wrong kind is one line (README)",
             "alexnet_tf/cli/common.py", "        flags.register_validator(name, check)",
             "        pass",
             ("tests/test_cli.py::test_every_path_flag_of_the_wrong_kind_is_one_line",)),
    Mutation("unservable_version_served", "--saved_model=BASE skips versions without a "
             "SavedModel (SERVING)", "alexnet_tf/serving/export.py",
             "    servable = [v for v in versions\n"
             "                if tf.saved_model.contains_saved_model(os.path.join(path, str(v)))]",
             "    servable = versions",
             ("tests/test_export.py::test_a_serving_base_skips_versions_without_a_savedmodel_"
              "and_says_how_to_move_them",)),
    Mutation("lrn_alpha_over_n", "LRN's alpha multiplies the plain sum (section 3.3)",
             "alexnet_tf/model/layers.py",
             "self.alpha = float(alpha)", "self.alpha = float(alpha) / n",
             ("tests/test_layers.py",)),
    Mutation("lrn_beta", "LRN's exponent is -beta (section 3.3)", "alexnet_tf/model/layers.py",
             "self.beta = float(beta)", "self.beta = float(beta) / 2",
             ("tests/test_layers.py",)),
    Mutation("update_rule_momentum", "v <- 0.9 v - ... (section 5)",
             "alexnet_tf/training/optimizer.py", "momentum=tf.cast(self.momentum, dtype)",
             "momentum=tf.cast(self.momentum / 2, dtype)", ("tests/test_optimizer.py",)),
    Mutation("weight_decay_outside_momentum", "weight decay enters the momentum (section 5)",
             "alexnet_tf/training/optimizer.py",
             "gradient = gradient + ops.cast(self.coupled_weight_decay, dtype) * variable",
             "gradient = gradient", ("tests/test_optimizer.py",)),
    Mutation("weight_decay_on_biases", "biases are not decayed (our reading, PAPER_CHOICES)",
             "alexnet_tf/training/optimizer.py", "return len(variable.shape) >= 2", "return True",
             ("tests/test_optimizer.py",)),
    Mutation("single_replica_all_reduce", "a traced train step gives its memory back (TESTING)",
             "alexnet_tf/training/optimizer.py",
             "if context is None or context.num_replicas_in_sync == 1:",
             "if False:", ("tests/test_optimizer.py::"
                           "test_a_traced_train_step_leaves_nothing_behind_when_its_model_goes",)),
    Mutation("init_stddev", "weights ~ N(0, 0.01) (section 5)",
             "alexnet_tf/model/network.py",
             "keras.initializers.RandomNormal(0.0, paper.INIT_STDDEV,",
             "keras.initializers.RandomNormal(0.0, 0.1,",
             ("tests/test_models.py::test_paper_initialisation_statistics",)),
    Mutation("bias_init_ones", "biases 1 in conv2, conv4, conv5, fc6, fc7 (section 5)",
             "alexnet_tf/model/network.py",
             'one = bias_init == "paper" and base_name(layer_name) in paper.BIAS_ONE_LAYERS',
             "one = False", ("tests/test_models.py::test_paper_initialisation_statistics",)),
    Mutation("overlapping_pooling", "max pooling z=3, s=2 (section 3.4)",
             "alexnet_tf/model/network.py",
             "return [PlacedMaxPooling2D(pool_size, pool_stride, rounding=pool_rounding,",
             "return [PlacedMaxPooling2D(pool_stride, pool_stride, rounding=pool_rounding,",
             ("tests/test_models.py",)),
    Mutation("conv3_sees_one_tower", "conv3 sees both towers (figure 2)",
             "alexnet_tf/model/network.py",
             'h = [make.conv(_merge(h, f"concat3{s}", d), f3 // width, k3, s3, f"conv3{s}", d)\n'
             "             for s, d in tw]",
             'h = [make.conv(hi, f3 // width, k3, s3, f"conv3{s}", d)\n'
             "             for hi, (s, d) in zip(h, tw)]",
             ("tests/test_models.py",)),
    Mutation("fc6_sees_one_tower", "fc6 sees both towers (figure 2)",
             "alexnet_tf/model/network.py",
             'h = [PlacedFlatten(name=f"flatten{s}", device=d)(_merge(h, f"concat6{s}", d)) '
             "for s, d in tw]",
             'h = [PlacedFlatten(name=f"flatten{s}", device=d)(hi) for hi, (s, d) in zip(h, tw)]',
             ("tests/test_models.py",)),
    Mutation("dropout_at_test_time", "dropout only in training (section 4.2)",
             "alexnet_tf/training/train.py",
             "return tf.function(lambda images: model(images, training=False), "
             "reduce_retracing=True)",
             "return tf.function(lambda images: model(images, training=True), "
             "reduce_retracing=True)",
             ("tests/test_train.py::test_a_run_validates_checkpoints_and_writes_run_files",)),
    Mutation("flip_always", "horizontal reflection with probability 1/2 (section 4.1)",
             "alexnet_tf/data/preprocessing.py",
             "return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)",
             "return tf.image.flip_left_right(image)", ("tests/test_preprocessing.py",)),
    Mutation("ten_crop_centre", "the ten crops: four corners and the centre (section 4.1)",
             "alexnet_tf/data/preprocessing.py",
             "((height - size) // 2, (width - size) // 2)]", "(0, 0)]",
             ("tests/test_preprocessing.py", "tests/test_metrics.py")),
    Mutation("ten_crop_flip_axis", "the ten crops' reflections are horizontal (section 4.1)",
             "alexnet_tf/data/preprocessing.py",
             "crops = tf.concat([patches, tf.reverse(patches, axis=[-2])], axis=-4)",
             "crops = tf.concat([patches, tf.reverse(patches, axis=[-3])], axis=-4)",
             ("tests/test_preprocessing.py", "tests/test_metrics.py")),
    Mutation("mean_not_subtracted_in_training", "training images minus the mean (section 2)",
             "alexnet_tf/data/input_pipeline.py",
             "        image = normalization.subtract_mean(image)\n",
             "", ("tests/test_input_pipeline.py",)),
    Mutation("pca_colour_not_added", "each training image gets one PCA colour offset (4.1)",
             "alexnet_tf/data/input_pipeline.py", "image += normalization.pca_offset(pca_seed)",
             "image += 0 * normalization.pca_offset(pca_seed)",
             ("tests/test_input_pipeline.py::test_train_images_are_a_training_image_minus_the_"
              "mean_flipped_or_not_plus_one_colour",)),
    Mutation("mean_not_subtracted_in_evaluation", "evaluation images minus the mean (section 2)",
             "alexnet_tf/data/input_pipeline.py",
             "return crop_fn(normalization(normalization.decode_256(encoded)), image_size), label",
             "return crop_fn(normalization.decode_256(encoded), image_size), label",
             ("tests/test_input_pipeline.py::test_eval_images_are_the_centre_crop_minus_the_"
              "mean_over_the_scale",)),
    Mutation("mean_not_subtracted_in_export", "the SavedModel preprocesses as evaluation does",
             "alexnet_tf/serving/export.py",
             "return self.normalization(self.normalization.image_256(image))",
             "return self.normalization.image_256(image)",
             ("tests/test_export.py::test_serving_equals_evaluation_and_top_k_follows_the_"
              "probabilities",)),
    Mutation("ten_crop_first_only", "10-crop averages the ten softmaxes (section 4.1)",
             "alexnet_tf/metrics.py",
             "return tf.reduce_mean(tf.reshape(probs, [shape[0], shape[1], -1]), axis=1)",
             "return tf.reshape(probs, [shape[0], shape[1], -1])[:, 0]",
             ("tests/test_metrics.py",)),
    Mutation("top5_is_top1", "top-5 error counts the label among the five best (section 6)",
             "alexnet_tf/metrics.py", "k5 = min(5, scores.shape[-1])", "k5 = 1",
             ("tests/test_metrics.py",)),
    Mutation("ensemble_max", "an ensemble averages its members' softmax (section 6)",
             "alexnet_tf/metrics.py", "return np.mean(members, axis=0)",
             "return np.max(members, axis=0)", ("tests/test_metrics.py",)),
    Mutation("resume_restarts_the_epoch", "a resumed run continues where it stopped",
             "alexnet_tf/training/train.py",
             "done_in_epoch = min(max(before - e * steps_per_epoch, 0), steps_per_epoch)",
             "done_in_epoch = 0",
             ("tests/test_train.py::test_resume_equals_an_uninterrupted_run",)),
    Mutation("checkpoint_fallback", "an unreadable checkpoint is set aside, the one before used",
             "alexnet_tf/training/rundir.py", "problem = _unreadable(prefix)", "problem = None",
             ("tests/test_storage_faults.py::test_a_truncated_checkpoint_is_set_aside_and_the_"
              "run_resumes_from_the_one_before",)),
    Mutation("write_in_place", "a write never leaves a half-written file",
             "alexnet_tf/files.py",
             "        fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMPORARY_PREFIX + "
             "os.path.basename(path))",
             "        fd, tmp = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), path",
             ("tests/test_atomic_writes.py",)),
    Mutation("caffe_kernel_transpose", "Caffe's (out, in, h, w) kernels become (h, w, in, out)",
             "alexnet_tf/model/caffe.py", "return np.ascontiguousarray(w.transpose(2, 3, 1, 0))",
             "return np.ascontiguousarray(w.transpose(3, 2, 1, 0))",
             ("tests/test_caffe.py::test_imported_v1_model_computes_caffes_forward_pass",)),
    Mutation("caffe_bgr", "conv1's input channels reversed: Caffe reads BGR",
             "alexnet_tf/model/caffe.py", 'split("conv1", conv_kernel(w1[:, ::-1]), b1)',
             'split("conv1", conv_kernel(w1), b1)',
             ("tests/test_caffe.py::test_imported_v1_model_computes_caffes_forward_pass",)),
    Mutation("caffe_fc6_order", "fc6's inputs from Caffe's C,H,W order to Keras' H,W,C",
             "alexnet_tf/model/caffe.py",
             "kernel6 = w6.reshape(units, 256, 6, 6).transpose(2, 3, 1, 0).reshape(-1, units)",
             "kernel6 = w6.reshape(units, 6, 6, 256).transpose(1, 2, 3, 0).reshape(-1, units)",
             ("tests/test_caffe.py::test_imported_v1_model_computes_caffes_forward_pass",)),
    Mutation("lr_decay_factor", "the learning rate is divided by 10 (section 5)",
             "alexnet_tf/paper.py", "LR_DECAY_FACTOR = 10.0", "LR_DECAY_FACTOR = 5.0",
             ("tests/test_optimizer.py",)),
    Mutation("per_precision_recipe", "a run computing in float32 uses the float32 values",
             "alexnet_tf/config.py",
             "changes = {name: value for p, name, value in self.by_precision if p == precision}",
             "changes = {}", ("tests/test_config.py", "tests/test_train.py::test_per_precision_"
                              "settings_follow_the_precision")),
    Mutation("pca_scale", "PCA offsets in pixel units: eigenvalues of [0, 1] RGB x 255 (4.1)",
             "alexnet_tf/data/dataset_stats.py",
             "return PIXEL_SCALE * preprocessing.pca_offset(", "return preprocessing.pca_offset(",
             ("tests/test_dataset_stats.py",)),
    Mutation("api_means_bgr", "preprocess_input subtracts Caffe's means in RGB order",
             "alexnet_tf/model/caffe.py",
             "return np.asarray(CAFFE_BGR_MEAN[::-1], np.float32)",
             "return np.asarray(CAFFE_BGR_MEAN, np.float32)",
             ("tests/test_applications.py::test_preprocess_input_subtracts_caffes_channel_means_"
              "in_rgb",)),
    Mutation("api_weights_sha1", "published weights are refused unless their sha1 matches",
             "alexnet_tf/model/weights.py", "    if found != sha1:", "    if False:",
             ("tests/test_applications.py::test_a_wrong_file_or_a_dead_server_is_refused_and_"
              "leaves_nothing",)),
    Mutation("checkpoint_frozen_twice", "a checkpoint stores frozen weights once (#25)",
             "alexnet_tf/training/state.py",
             "rng = ([v.value for v in model.non_trainable_variables] if legacy",
             "rng = ([v.value for v in model.non_trainable_variables] if True",
             ("tests/test_finetune.py::test_fine_tuning_fc8_keeps_the_rest_bit_identical_learns_"
              "resumes_and_exports",)),
    Mutation("checkpoint_legacy_layout", "checkpoints of the earlier layout still resume (#25)",
             "alexnet_tf/training/state.py", "legacy = saved != len(dropout_states(state.model))",
             "legacy = False",
             ("tests/test_finetune.py::test_a_checkpoint_of_the_earlier_layout_resumes_weights_"
              "velocities_and_masks",)),
    Mutation("scan_cache_trusted", "a damaged scan cache is scanned again, never trusted (#25)",
             "alexnet_tf/data/sources.py",
             """            and isinstance(manifest.get("reasons"), dict)):""",
             "            ):", ("tests/test_fuzz.py::test_scan_cache_never_changes_the_answer",)),
    Mutation("stats_unchecked", "damaged statistics are refused in one line (#25)",
             "alexnet_tf/data/dataset_stats.py",
             'raise ValueError(f"{name} is not {shape} finite numbers")', "pass",
             ("tests/test_fuzz.py::test_run_config_and_statistics",)),
    Mutation("run_config_unchecked", "a run_config.json value of the wrong type is refused (#25)",
             "alexnet_tf/config.py", "        if problem:\n            raise ValueError(problem)",
             "        pass", ("tests/test_config.py::test_a_run_config_with_a_value_of_the_wrong_"
                             "type_or_range_is_refused_naming_it",)),
    Mutation("litert_int8_all_quantized", "int8 keeps the preprocessing, LRN, the logits and "
             "the softmax in float32 (SERVING)",
             "alexnet_tf/serving/deploy.py",
             "denylisted_ops=[\"SOFTMAX\"], denylisted_nodes=_litert_float32_nodes(",
             "denylisted_ops=None, denylisted_nodes=[] and _litert_float32_nodes(",
             ("tests/test_deploy.py",)),
    Mutation("onnx_int8_all_quantized", "int8 keeps the preprocessing, LRN, the logits and "
             "the softmax in float32 (SERVING)",
             "alexnet_tf/serving/deploy.py", "                        nodes_to_exclude=keep)",
             "                        nodes_to_exclude=[])", ("tests/test_deploy.py",)),
    Mutation("int8_lrn_and_preprocessing_quantized", "int8 keeps the preprocessing and LRN in "
             "float32: faster than between quantize ops (SERVING)", "alexnet_tf/serving/deploy.py",
             "        if isinstance(layer, (DeployPreprocessing, LocalResponseNormalization)):",
             "        if False:", ("tests/test_deploy.py",)),
    Mutation("onnx_int8_8_bit_weights", "ONNX int8 weights keep 7 bits: no u8 x s8 saturation "
             "without VNNI (#27)",
             "alexnet_tf/serving/deploy.py", "reduce_range=True", "reduce_range=False",
             ("tests/test_deploy.py::test_onnx_int8_holds_7_bit_weights_and_runs_close_to_keras",)),
    Mutation("inference_jit_never", "inference compiles with XLA where it measured faster (#27)",
             "alexnet_tf/hardware.py",
             "if hardware.cpu_class == \"avx2\" and precision == FLOAT32:",
             "if hardware.cpu_class == \"avx2\" and precision == FLOAT32 and not inference:",
             ("tests/test_hardware.py",)),
    Mutation("deploy_lrn_in_place", "a deployment conversion leaves the caller's model as it was "
             "(#27)",
             "alexnet_tf/serving/deploy.py", "    classifier = _with_matmul_lrn(classifier)\n",
             "    [setattr(layer, 'implementation', 'matmul') for layer in classifier.layers\n"
             "     if isinstance(layer, LocalResponseNormalization)]\n",
             ("tests/test_deploy.py::test_deploy_model_leaves_the_classifier_as_it_was",)),
    Mutation("savedmodel_weights_twice", "a SavedModel stores each weight once (#27; "
             "keras-team/keras #23553)", "alexnet_tf/serving/export.py",
             "        archive = keras.export.ExportArchive()\n",
             "        archive = keras.export.ExportArchive()\n        archive.track(self.classifier)\n",
             ("tests/test_export.py::test_the_savedmodel_stores_each_weight_once",)),
    Mutation("cpu_class_override_ignored", "ALEXNET_TF_CPU_CLASS makes any CPU decide as that "
             "class (#34)", "alexnet_tf/hardware.py", "    override = cpu_class_override()\n",
             "    override = None\n",
             ("tests/test_hardware.py::test_the_cpu_class_can_be_named_and_every_choice_follows_it",
              "tests/test_train.py::test_auto_precision_and_xla_follow_the_cpu_class_and_are_"
              "recorded")),
    Mutation("index_of_another_precision_always_reused", "an fc7 index of another precision is "
             "reused only when its features agree (#34)", "alexnet_tf/analysis/retrieval.py",
             "    if worst > bound:", "    if worst > bound * 100:",
             ("tests/test_retrieval.py",)),
    Mutation("worker_replaced", "a worker that dies is not replaced, so the run ends (#34)",
             "tests/conftest.py", '        config.option.maxworkerrestart = "0"',
             '        config.option.maxworkerrestart = "4"',
             ("tests/test_harness.py::test_a_killed_worker_ends_the_run_with_the_test_named",)),
    Mutation("grad_cam_one_tower", "Grad-CAM weighs both towers' conv5 maps (#38)",
             "alexnet_tf/analysis/grad_cam.py",
             "    for activations, gradient in zip(maps, gradients):",
             "    for activations, gradient in zip(maps[:1], gradients[:1]):",
             ("tests/test_grad_cam.py",)),
    Mutation("grad_cam_map_flipped", "a Grad-CAM map lies where the evidence is (#38)",
             "alexnet_tf/analysis/grad_cam.py", "    cam = tf.nn.relu(cam)[..., None]",
             "    cam = tf.reverse(tf.nn.relu(cam), [1])[..., None]",
             ("tests/test_grad_cam.py::test_the_map_peaks_where_the_object_is",)),
    Mutation("data_imports_training", "data/ and model/ import only the foundation (#36)",
             "alexnet_tf/data/sources.py", "from alexnet_tf.config import BUILT_IN\n",
             "from alexnet_tf.config import BUILT_IN\nfrom alexnet_tf.training import rundir\n",
             ("tests/test_architecture.py",)),
    Mutation("label_smoothing_ignored", "--label_smoothing smooths the target (#38)",
             "alexnet_tf/metrics.py", "    if label_smoothing:\n", "    if False:\n",
             ("tests/test_metrics.py",)),
    Mutation("class_weights_by_count", "--class_weights=balanced: N / (classes x N_c) (#38)",
             "alexnet_tf/metrics.py", "    weights = np.divide(counts.sum(), len(counts) * counts,",
             "    weights = np.divide(counts, counts.sum(),",
             ("tests/test_metrics.py", "tests/test_train.py::test_fine_tuning_loss_and_rate_"
              "options_reach_the_run")),
    Mutation("lr_multiplier_ignored", "--lr_multipliers scales a layer's rate (#38)",
             "alexnet_tf/training/optimizer.py",
             "            learning_rate = learning_rate * self.factors[index]\n",
             "            learning_rate = learning_rate\n",
             ("tests/test_optimizer.py", "tests/test_train.py::test_fine_tuning_loss_and_rate_"
              "options_reach_the_run")),
    Mutation("ema_not_restored", "the tools read an --ema run's averaged weights (#38)",
             "alexnet_tf/training/restore.py",
             "    state.load_averages(model, run.config, path)", "    pass",
             ("tests/test_train.py::test_an_ema_run_validates_and_is_restored_with_its_averaged_"
              "weights",)),
    Mutation("unfreeze_optimizer_rebuilt", "--unfreeze_at resumes exactly across the switch "
             "(#38)", "alexnet_tf/training/state.py",
             "        if config.unfreeze_at:        # every layer's velocity from the start: one",
             "        if False:        # every layer's velocity from the start: one",
             ("tests/test_train.py::test_unfreezing_at_an_epoch_trains_every_layer_from_then_and_"
              "resumes_exactly",)),
    Mutation("mixup_loss_unmixed", "a mixed batch's loss is mixed as its images (#38)",
             "alexnet_tf/training/train.py",
             "            if lam is not None:        # --mixup / --cutmix: the loss mixed as the "
             "images\n", "            if False:\n",
             ("tests/test_input_pipeline.py::test_mixup_batches_are_the_stated_mixture_with_the_"
              "reversed_batch",)),
    Mutation("randaugment_stateful", "RandAugment's draws follow from the image's seed, so a "
             "resume augments alike (#38)", "alexnet_tf/data/randaugment.py",
             "        index = tf.random.stateless_uniform([], which, 0, len(OPS), dtype=tf.int32)",
             "        index = tf.random.uniform([], 0, len(OPS), dtype=tf.int32)",
             ("tests/test_randaugment.py",)),
    Mutation("solarize_threshold", "RandAugment's solarize inverts values >= 256 (1 - m) (#38)",
             "alexnet_tf/data/randaugment.py", "image >= 256.0 * (1.0 - m)", "image >= 255.0 * m",
             ("tests/test_randaugment.py",)),
    Mutation("lrn_ops_alpha", "every backend's LRN (keras.ops) is the paper's formula, equal to "
             "TensorFlow's paths (#37)", "alexnet_tf/model/formulas.py",
             "return x * inverse_power(k + alpha * window_sum(ops.square(x), n), beta)",
             "return x * inverse_power(k + alpha * 1.001 * window_sum(ops.square(x), n), beta)",
             ("tests/test_layers.py::test_tensorflows_fast_paths_equal_the_keras_ops_path",)),
    Mutation("paper_sgd_ops_decays_biases", "PaperSGD decays kernels only, on every backend "
             "(section 5, #37)", "alexnet_tf/training/optimizer.py",
             "        if is_decayed(variable) and self.coupled_weight_decay:\n"
             "            gradient = gradient + ops.cast(",
             "        if self.coupled_weight_decay:\n"
             "            gradient = gradient + ops.cast(",
             ("tests/test_backends.py",)),
    Mutation("selfcheck_reference_unchecked", "the self-check fails on a wrong forward pass "
             "(#37)", "alexnet_tf/selfcheck.py",
             "    passed = difference <= FORWARD_TOLERANCE * float(np.abs(expected).max())",
             "    passed = True",
             ("tests/test_selfcheck.py",)),
)
