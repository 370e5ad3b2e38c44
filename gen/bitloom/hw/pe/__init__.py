"""Processing elements: exact dot products of weight x activation vectors per format pair."""

from bitloom.hw.pe.dot import adder_tree, dot_product, dot_products, element_value
from bitloom.hw.pe.unit import DotProductUnit

__all__ = ["DotProductUnit", "adder_tree", "dot_product", "dot_products", "element_value"]
