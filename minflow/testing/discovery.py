"""Finding every flow and transformer class, so that none can exist without an example.

The universal suite checks the classes that have an entry in ``examples.py``. To make sure
no class escapes it, the classes are not listed by hand anywhere: they are *found*, by
importing every module of the package ``minflow.flows`` (``pkgutil.iter_modules`` lists
the files, so a new file is found even if nothing imports it yet) and keeping the classes
it defines that subclass ``Flow`` or ``Transformer``. The tests then compare what was found
with the example tables and fail naming each class that has no example.
"""

import importlib
import inspect
import pkgutil

from .. import flows as flows_package
from ..flows.base import Flow
from ..flows.transformers import Transformer


def classes_defined_under(package, base):
    """{name: class} of every public class under ``package`` that subclasses ``base`` (not ``base``).

    Every module of the package (found by ``pkgutil.iter_modules`` over its folder, and
    imported) is searched, subpackages included; a class counts where it is defined, not
    where it is imported. Names that start with ``_`` are private helpers and left out.
    """
    found = {}
    prefix = package.__name__ + "."
    for module_info in pkgutil.walk_packages(package.__path__, prefix):
        module = importlib.import_module(module_info.name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, base) and cls is not base:
                if not name.startswith("_"):
                    found[name] = cls
    return found


def flow_classes(package=flows_package):
    """{name: class} of every Flow subclass defined under ``minflow.flows``."""
    return classes_defined_under(package, Flow)


def transformer_classes(package=flows_package):
    """{name: class} of every Transformer subclass defined under ``minflow.flows``."""
    return classes_defined_under(package, Transformer)
