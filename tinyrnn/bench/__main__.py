"""``python -m tinyrnn.bench``: the speed benchmark (see ``tinyrnn.bench``)."""
from . import main

main()
