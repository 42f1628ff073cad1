"""Kubernetes' name syntax (apimachinery's validation package): which strings are DNS labels,
subdomains, label keys and values. Free of pydantic, so ztunnel can check identities with it
without loading the resource schemas (mesh/resources/base.py re-exports these)."""

from __future__ import annotations

import re

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
CLUSTER_DOMAIN = "cluster.local"  # the cluster's DNS domain: pods' search list, ztunnel's name server
WILDCARD_DNS = re.compile(r"^\*\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def dns1123_label_error(value: str) -> str | None:
    """Why `value` is not an RFC 1123 label, or None when it is one."""
    if len(value) > 63:
        return "must be no more than 63 characters"
    if not _DNS1123_LABEL.match(value):
        return (
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
            "and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc')"
        )
    return None


def dns1123_subdomain_error(value: str) -> str | None:
    """Why `value` is not an RFC 1123 subdomain, or None when it is one."""
    if len(value) > 253:
        return "must be no more than 253 characters"
    if not _DNS1123_SUBDOMAIN.match(value):
        return (
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
            "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com')"
        )
    return None


def dns1035_label_error(value: str) -> str | None:
    """Why `value` is not an RFC 1035 label (Service names), or None when it is one."""
    if len(value) > 63:
        return "must be no more than 63 characters"
    if not _DNS1035_LABEL.match(value):
        return (
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
            "an alphabetic character, and end with an alphanumeric character (e.g. 'my-name')"
        )
    return None


def qualified_name_error(value: str) -> str | None:
    """Why `value` is not a label/annotation key (`[prefix/]name`), or None when it is one."""
    prefix, slash, name = value.rpartition("/")
    if slash and (not prefix or dns1123_subdomain_error(prefix)):
        return "prefix part must be a lowercase RFC 1123 subdomain"
    if not name:
        return "name part must be non-empty"
    if len(name) > 63:
        return "name part must be no more than 63 characters"
    if not _QUALIFIED_NAME.match(name):
        return (
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
            "end with an alphanumeric character (e.g. 'MyName', or 'my.name', or '123-abc')"
        )
    return None


def label_value_error(value: str) -> str | None:
    """Why `value` is not a valid label value, or None when it is one."""
    if len(value) > 63:
        return "must be no more than 63 characters"
    if not _LABEL_VALUE.match(value):
        return (
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
            "or '.', and must start and end with an alphanumeric character"
        )
    return None
