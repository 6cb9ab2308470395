"""Installer.replace_everywhere finds every copy of a replaced value: in
module globals, class attributes and defaults, whether the value's type is
one the reference index leaves out (installer._UNINDEXED: a full scan then)
or not, and in modules imported between two replacements."""
import sys
import types

from retracesoftware.install import installer as installer_mod
from retracesoftware.install.installer import Installer


def _module(name, **globals_):
    module = types.ModuleType(name)
    module.__dict__.update(globals_)
    sys.modules[name] = module
    return module


def _installer():
    inst = Installer(system=None, config=None)
    return inst


def test_indexed_and_unindexed_values_are_replaced_everywhere():
    def old_fn():
        return "old"

    def new_fn():
        return "new"

    old_text = "a string " + str(id(test_indexed_and_unindexed_values_are_replaced_everywhere))
    assert type(old_text) in installer_mod._UNINDEXED and type(old_fn) not in installer_mod._UNINDEXED

    def user(f=old_fn, *, text=old_text):
        return f, text

    old_obj, new_obj = object(), object()     # in a class: indexed (a function there is a method)
    holder = type("Holder", (), {"obj": old_obj, "text": old_text})
    a = _module("_retrace_test_index_a", fn=old_fn, text=old_text, user=user, Holder=holder)
    holder.__module__ = a.__name__
    user.__module__ = a.__name__
    inst = _installer()
    try:
        inst.replace_everywhere({id(old_fn): (old_fn, new_fn), id(old_obj): (old_obj, new_obj)})
        assert a.fn is new_fn and holder.obj is new_obj and user.__defaults__ == (new_fn,)
        assert a.text is old_text
        # A module imported after the first replacement is scanned too.
        b = _module("_retrace_test_index_b", text=old_text, fn=new_fn)
        new_text = "another string"
        inst.replace_everywhere({id(old_text): (old_text, new_text)})
        assert a.text == new_text and b.text == new_text and holder.text == new_text
        assert user.__kwdefaults__ == {"text": new_text}
        inst.uninstall()
        assert a.fn is old_fn and a.text is old_text and b.text is old_text and holder.obj is old_obj
    finally:
        inst.uninstall()
        sys.modules.pop("_retrace_test_index_a", None)
        sys.modules.pop("_retrace_test_index_b", None)
