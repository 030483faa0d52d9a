"""Filters that write a report's numbers the same way in HTML as in the text part."""

from django import template

from .. import rendering

register = template.Library()


@register.filter
def show(value, unit="count"):
    return rendering.show(value, unit)


@register.filter
def change(figure):
    return rendering.change(figure)


@register.filter
def tone(figure):
    return rendering.tone(figure)
