"""Signal science for 12-lead ECGs: no training state lives here.

Modules:
  errors      RecordError, the one exception type for a bad record.
  leads       canonical lead order, spelling normalisation, reordering, limb-lead derivation.
  preprocess  units, resampling, zero-phase band-pass, one-scale-per-record normalisation.
  records     reading a WFDB record into a validated canonical (T, 12) array.
  vcg         Dower / inverse-Dower projections between 12 leads and the Frank VCG.
  augment     the 3KG view (rotation, scaling, wrapping time mask) in pure JAX.
  peaks       multi-lead R-peak detection and one-to-one peak matching.
  ludb        LUDB annotation reader: waves, annotated spans, QRS marks.
  delineation wave masks <-> P/QRS/T intervals, cleanup of predicted masks, wave peaks.
  features    the record feature vector phi behind the soft rhythm targets, its scaling.
  beats       per-beat feature vectors and AAMI-style beat classes.
  targets     the offline target stage: R peaks, phi, beat features and classes, padded.
  synthetic   a VCG dipole-model 12-lead generator, the embedded default dataset.
"""
