"""Inter-modality probes (IMF, NMI)."""
