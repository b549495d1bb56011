"""Cross-modal fusion modules, one file per idea (concat, LTS, MARIS, MagNet/LAVT, HARIS)."""
