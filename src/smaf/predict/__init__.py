"""Segment new images with a trained model: the library side of ``smaf predict``.

:func:`smaf.predict.folder.predict_folder` runs a model over every image of a folder (any
depth; :mod:`smaf.data.images` finds them and :func:`smaf.io.load_image` reads each one upright as 8-bit RGB):

* a **DeepLab** model (``deeplab/model.pt``): MSC logits of the full image
  (:func:`smaf.inference.infer_logits`, optional flip), bilinear upsampling and softmax
  (:func:`smaf.inference.upsampled_probs`), optionally DeepLab's dense CRF
  (:class:`smaf.crf.DenseCRF`, deeplab-pytorch's values), argmax: the numbers
  :func:`~smaf.stages.deeplab.predict_split` and :func:`~smaf.stages.crf_stage.crf_split`
  give for the same image.
* a **classifier** (EPS ``pretrain/model.pt`` or SMAF ``self_train/model.pt``): new images
  have no labels, so the classes the classifier itself finds present (image logit > 0, i.e.
  sigmoid > 0.5, on the full image) get their fused multi-scale CAMs
  (:func:`smaf.cam.class_maps`), saved as jet heat maps, and the seed argmax with a
  constant background score ``thr`` (:func:`smaf.cam.seed_labels`) is the mask.

Output folder (:mod:`smaf.predict.outputs`)::

    <out>/masks/<name>.png            palette PNG (VOC colours), values 0..C
    <out>/overlay/<name>.jpg          (overlay) the image with its classes' colours blended in
    <out>/cams/<name>_<class>.png     (classifier) heat map of each class found in the image
    <out>/classes.json                class names and palette colours; index = label value
    <out>/areas.csv                   per image: image, width, height, fraction of each class
    <out>/predict.json                settings, counts, the images that could not be read and
                                      every file written (``--overwrite`` deletes only those)

``<name>`` is the image's path under the folder without its extension (sub-folders kept).
Every file is written atomically and an image's mask last, so a mask means the image is done:
a rerun skips those images (resumable) and refuses an output folder made with other settings
or holding files it did not write (:mod:`~smaf.predict.ownership`).
Unreadable images are skipped with a warning and listed at the end (``strict``: stop instead).

Modules: :mod:`~smaf.data.images` (standard library only: the workflow imports it to
fingerprint a folder), :mod:`~smaf.predict.model`, :mod:`~smaf.predict.outputs`,
:mod:`~smaf.predict.ownership` (which files of the output folder it wrote),
:mod:`~smaf.predict.inputs` (a folder, image files, or several), :mod:`~smaf.predict.folder`.
Nothing is imported here, so the light module stays light.
"""
