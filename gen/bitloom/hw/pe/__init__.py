"""Processing elements: exact dot products of weight x activation vectors per format pair."""

from bitloom.hw.pe.dot import adder_tree, dot_product, element_value

__all__ = ["adder_tree", "dot_product", "element_value"]
