"""Solutions to the notebooks' exercises, one module per notebook (``nb00`` ... ``nb09``).

Each is checked by ``tests/test_solutions_nbNN.py``. Try the exercise first.
"""
