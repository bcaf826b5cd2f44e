"""Sigma v2.1 value semantics, one modifier at a time, with the tricky cases."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sigma.modifiers import modifier_mapping, reverse_modifier_mapping

from detectors.encodings import register_modifiers
from tests.ruletools import load, matches


def test_plain_string_matches_whole_value_case_insensitively() -> None:
    rule = "sel:\n    Image: 'C:\\Windows\\System32\\CMD.exe'\ncondition: sel"
    assert matches(rule, {"Image": "c:\\windows\\system32\\cmd.exe"})
    assert not matches(rule, {"Image": "c:\\windows\\system32\\cmd.exe.bak"})


def test_wildcards_star_and_question_mark() -> None:
    rule = "sel:\n    CommandLine: '*net? user*'\ncondition: sel"
    assert matches(rule, {"CommandLine": "cmd /c NET1 USER admin"})
    assert not matches(rule, {"CommandLine": "net user"})  # ? needs exactly one character


def test_escaped_star_is_a_literal_star() -> None:
    rule = "sel:\n    CommandLine: 'a\\*b'\ncondition: sel"
    assert matches(rule, {"CommandLine": "a*b"})
    assert not matches(rule, {"CommandLine": "axxb"})


def test_escaped_backslash_before_wildcard_keeps_the_wildcard() -> None:
    # '\\*' is a plain backslash followed by a real wildcard.
    rule = "sel:\n    TargetFilename: 'C:\\\\*'\ncondition: sel"
    assert matches(rule, {"TargetFilename": "C:\\anything\\here"})
    assert not matches(rule, {"TargetFilename": "D:\\anything"})


def test_three_backslashes_escape_both_backslash_and_wildcard() -> None:
    rule = "sel:\n    Field: 'x\\\\\\*'\ncondition: sel"
    assert matches(rule, {"Field": "x\\*"})
    assert not matches(rule, {"Field": "x\\abc"})


def test_single_backslash_not_before_wildcard_is_literal() -> None:
    rule = "sel:\n    Image|endswith: '\\rundll32.exe'\ncondition: sel"
    assert matches(rule, {"Image": "C:\\Windows\\System32\\RUNDLL32.EXE"})
    assert not matches(rule, {"Image": "C:\\Windows\\System32\\xrundll32.exe"})


def test_contains_startswith_endswith() -> None:
    assert matches("sel:\n    F|contains: 'mid'\ncondition: sel", {"F": "xxMIDxx"})
    assert matches("sel:\n    F|startswith: 'pre'\ncondition: sel", {"F": "PREfix"})
    assert not matches("sel:\n    F|startswith: 'pre'\ncondition: sel", {"F": "xpre"})
    assert matches("sel:\n    F|endswith: 'fix'\ncondition: sel", {"F": "suFIX"})


def test_all_requires_every_value() -> None:
    rule = "sel:\n    CommandLine|contains|all:\n        - ' -enc '\n        - 'hidden'\ncondition: sel"
    assert matches(rule, {"CommandLine": "powershell -w hidden -enc AAAA"})
    assert not matches(rule, {"CommandLine": "powershell -enc AAAA"})


def test_windash_accepts_every_dash_variant() -> None:
    rule = "sel:\n    CommandLine|windash|contains: ' -exec bypass'\ncondition: sel"
    for dash in ("-", "/", "\u2013", "\u2014", "\u2015"):
        assert matches(rule, {"CommandLine": f"powershell {dash}exec bypass"}), dash
    assert not matches(rule, {"CommandLine": "powershell +exec bypass"})


def test_windash_with_all_needs_each_value_in_some_dash_form() -> None:
    rule = "sel:\n    CommandLine|windash|contains|all:\n        - '-a'\n        - '-b'\ncondition: sel"
    assert matches(rule, {"CommandLine": "tool /a \u2013b"})
    assert not matches(rule, {"CommandLine": "tool /a"})


def test_re_is_case_sensitive_by_default_and_i_flag_folds_case() -> None:
    assert matches("sel:\n    F|re: 'Inv.ke'\ncondition: sel", {"F": "x Invoke y"})
    assert not matches("sel:\n    F|re: 'Inv.ke'\ncondition: sel", {"F": "x invoke y"})
    assert matches("sel:\n    F|re|i: 'Inv.ke'\ncondition: sel", {"F": "x INVOKE y"})


def test_re_m_and_s_flags() -> None:
    assert matches("sel:\n    F|re|m: '^second$'\ncondition: sel", {"F": "first\nsecond\nthird"})
    assert not matches("sel:\n    F|re: '^second$'\ncondition: sel", {"F": "first\nsecond\nthird"})
    assert matches("sel:\n    F|re|s: 'a.b'\ncondition: sel", {"F": "a\nb"})
    assert not matches("sel:\n    F|re: 'a.b'\ncondition: sel", {"F": "a\nb"})


def test_re_classes_are_unicode_as_in_python_re() -> None:
    # The linear-time engine must not bring its own ASCII-only \s and \d.
    assert matches("sel:\n    F|re: 'net\\s+user'\ncondition: sel", {"F": "net\u00a0user"})
    assert matches("sel:\n    F|re: 'a\\sb'\ncondition: sel", {"F": "a\x0bb"})
    assert matches("sel:\n    F|re: 'x\\d{2}'\ncondition: sel", {"F": "x\u0663\u0664"})
    assert not matches("sel:\n    F|re: 'x\\W'\ncondition: sel", {"F": "x\u00e9"})


def test_re_dollar_also_matches_before_a_final_newline() -> None:
    assert matches("sel:\n    F|re: '\\.exe$'\ncondition: sel", {"F": "a.exe\n"})
    assert not matches("sel:\n    F|re: '\\.exe$'\ncondition: sel", {"F": "a.exe\n\n"})


def test_re_i_folds_case_as_python_re_does() -> None:
    assert matches("sel:\n    F|re|i: 'kerberos'\ncondition: sel", {"F": "\u212aERBEROS"})  # Kelvin sign
    assert matches("sel:\n    F|re|i: 'invoke'\ncondition: sel", {"F": "\u0130NVOKE"})  # dotted capital I


def test_re_with_a_backreference_still_matches() -> None:
    assert matches("sel:\n    F|re: '(\\w)\\1\\1'\ncondition: sel", {"F": "xaaay"})
    assert not matches("sel:\n    F|re: '(\\w)\\1\\1'\ncondition: sel", {"F": "xaay"})


def test_wildcards_with_many_stars_do_not_backtrack() -> None:
    # Python's re takes about 48 s on this value; the rule's wildcard runs on RE2.
    assert not matches("sel:\n    F: '*a*a*a*a*b'\ncondition: sel", {"F": "a" * 400})
    assert matches("sel:\n    F: '*a*a*a*a*b'\ncondition: sel", {"F": "a" * 400 + "B"})


def test_plain_values_ignore_case_but_cased_does_not() -> None:
    assert matches("sel:\n    F: 'Secret'\ncondition: sel", {"F": "SECRET"})
    assert matches("sel:\n    F|cased: 'Secret'\ncondition: sel", {"F": "Secret"})
    assert not matches("sel:\n    F|cased: 'Secret'\ncondition: sel", {"F": "SECRET"})
    assert not matches("sel:\n    F|contains|cased: 'Sec'\ncondition: sel", {"F": "xSECx"})


def test_base64_encodes_the_value() -> None:
    encoded = base64.b64encode(b"whoami").decode()
    assert matches("sel:\n    F|base64: 'whoami'\ncondition: sel", {"F": encoded})


@pytest.mark.parametrize("prefix", [b"", b"x", b"xy"])
def test_base64offset_finds_value_at_every_byte_offset(prefix: bytes) -> None:
    rule = "sel:\n    CommandLine|base64offset|contains: 'http://'\ncondition: sel"
    payload = base64.b64encode(prefix + b"IEX http://evil/x").decode()
    assert matches(rule, {"CommandLine": f"powershell -enc {payload}"})


def test_wide_base64offset_matches_powershell_encoded_command() -> None:
    rule = "sel:\n    CommandLine|wide|base64offset|contains: 'Invoke-'\ncondition: sel"
    payload = base64.b64encode("iex (Invoke-Expression x)".encode("utf-16le")).decode()
    assert matches(rule, {"CommandLine": f"powershell -EncodedCommand {payload}"})


def test_utf16_variants_encode_as_specified() -> None:
    le = base64.b64encode("cmd".encode("utf-16le")).decode()
    be = base64.b64encode("cmd".encode("utf-16be")).decode()
    bom = base64.b64encode(b"\xff\xfe" + "cmd".encode("utf-16le")).decode()
    assert matches("sel:\n    F|utf16le|base64: 'cmd'\ncondition: sel", {"F": le})
    assert matches("sel:\n    F|utf16be|base64: 'cmd'\ncondition: sel", {"F": be})
    assert matches("sel:\n    F|utf16|base64: 'cmd'\ncondition: sel", {"F": bom})


def test_cidr_ipv4_and_ipv6() -> None:
    rule = "sel:\n    DestinationIp|cidr:\n        - '10.0.0.0/8'\n        - 'fe80::/10'\ncondition: sel"
    assert matches(rule, {"DestinationIp": "10.1.2.3"})
    assert matches(rule, {"DestinationIp": "fe80::1"})
    assert not matches(rule, {"DestinationIp": "11.1.2.3"})
    assert not matches(rule, {"DestinationIp": "not an ip"})


def test_null_means_absent_or_json_null_and_differs_from_exists() -> None:
    null_rule = "sel:\n    F: null\ncondition: sel"
    assert matches(null_rule, {})
    assert matches(null_rule, {"F": None})
    assert not matches(null_rule, {"F": ""})  # "null shares no type with any other value" (Sigma v2.1)
    assert not matches(null_rule, {"F": "x"})
    exists_rule = "sel:\n    F|exists: true\ncondition: sel"
    assert matches(exists_rule, {"F": None})  # present, whatever the value
    assert not matches(exists_rule, {})
    assert matches("sel:\n    F|exists: false\ncondition: sel", {})


def test_neq_excludes_the_values() -> None:
    rule = "sel:\n    User|neq: 'SYSTEM'\ncondition: sel"
    assert matches(rule, {"User": "alice"})
    assert not matches(rule, {"User": "system"})


def test_numeric_comparisons_accept_numeric_strings() -> None:
    assert matches("sel:\n    Size|gt: 100\ncondition: sel", {"Size": "101"})
    assert not matches("sel:\n    Size|gt: 100\ncondition: sel", {"Size": 100})
    assert matches("sel:\n    Size|gte: 100\ncondition: sel", {"Size": 100})
    assert matches("sel:\n    Size|lt: 10\ncondition: sel", {"Size": "9"})
    assert matches("sel:\n    Size|lte: 10\ncondition: sel", {"Size": 10.0})
    assert not matches("sel:\n    Size|lt: 10\ncondition: sel", {"Size": "abc"})


def test_numbers_and_numeric_strings_compare_equal() -> None:
    assert matches("sel:\n    EventID: 4688\ncondition: sel", {"EventID": "4688"})
    assert matches("sel:\n    EventID: '4688'\ncondition: sel", {"EventID": 4688})
    assert matches("sel:\n    ProcessId: 3488\ncondition: sel", {"ProcessId": "3488"})
    assert not matches("sel:\n    EventID: 4688\ncondition: sel", {"EventID": "46880"})


def test_fieldref_compares_two_fields() -> None:
    rule = "sel:\n    ParentImage|fieldref: Image\ncondition: sel"
    assert matches(rule, {"Image": "C:\\a.exe", "ParentImage": "c:\\A.EXE"})
    assert not matches(rule, {"Image": "C:\\a.exe", "ParentImage": "C:\\b.exe"})
    assert not matches(rule, {"ParentImage": "C:\\b.exe"})


def test_list_valued_field_matches_when_any_element_matches() -> None:
    rule = "sel:\n    Data|contains: 'mimikatz'\ncondition: sel"
    assert matches(rule, {"Data": ["HostName=x", "HostApplication=Invoke-Mimikatz"]})
    assert not matches(rule, {"Data": ["a", "b"]})


def test_dotted_field_names_reach_nested_objects() -> None:
    rule = "sel:\n    process.parent.name: 'winword.exe'\ncondition: sel"
    assert matches(rule, {"process": {"parent": {"name": "WINWORD.EXE"}}})
    assert matches(rule, {"process.parent.name": "winword.exe"})
    assert not matches(rule, {"process": {"parent": "winword.exe"}})


def test_keywords_search_every_string_value() -> None:
    rule = "keywords:\n    - 'mimikatz'\n    - 'sekurlsa'\ncondition: keywords"
    assert matches(rule, {"a": 1, "b": {"c": ["x", "run SEKURLSA::logonpasswords"]}})
    assert not matches(rule, {"a": "nothing"})


def test_one_of_all_of_them_and_parentheses() -> None:
    det = (
        "sel_a:\n    F: a\nsel_b:\n    G: b\nfilter:\n    H: h\n"
        "condition: (1 of sel_* and not filter) or all of them"
    )
    assert matches(det, {"F": "a"})
    assert matches(det, {"G": "b"})
    assert not matches(det, {"F": "a", "H": "h"})
    assert matches(det.replace("condition: (1 of sel_* and not filter) or all of them", "condition: all of them"),
                   {"F": "a", "G": "b", "H": "h"})


def test_time_part_modifiers_read_the_timestamp() -> None:
    rule = "sel:\n    TimeCreated_SystemTime|hour: 3\ncondition: sel"
    assert matches(rule, {"TimeCreated_SystemTime": "2020-10-26T03:58:27.997Z"})
    assert not matches(rule, {"TimeCreated_SystemTime": "2020-10-26T04:58:27.997Z"})
    assert matches("sel:\n    T|month: 10\ncondition: sel", {"T": "2020-10-26T03:58:27Z"})


def test_expand_uses_configured_placeholder_values() -> None:
    rule = "sel:\n    WorkstationName|expand: '%Workstations%'\ncondition: sel"
    values = {"Workstations": ["WS1", "WS2"]}
    assert matches(rule, {"WorkstationName": "ws2"}, placeholders=values)
    assert not matches(rule, {"WorkstationName": "ws3"}, placeholders=values)


def test_unresolved_placeholder_rejects_the_rule_with_its_name() -> None:
    ruleset = load("sel:\n    WorkstationName|expand: '%Workstations%'\ncondition: sel")
    assert not ruleset.rules
    assert "Workstations" in ruleset.rejections[0].reason


# --- registration of the byte-exact modifiers in pySigma ---------------------------------------

# Runs in a fresh interpreter: in this one, earlier tests have loaded rules already. Prints the
# modifier table (name -> class path) before importing, after importing, and after loading.
_REGISTRATION_PROBE = """
import json, pathlib, sys, tempfile
import sigma.modifiers as m

def table():
    modifiers = {name: f"{cls.__module__}.{cls.__qualname__}" for name, cls in m.modifier_mapping.items()}
    return modifiers, dict(m.reverse_modifier_mapping)

before = table()
import detectors, detectors.loader, detectors.rulefiles, detectors.encodings, detectors.compiler
after_import = table()
rule = "title: t\\nid: 1b7c6a52-1c0e-4a67-9c8f-3f0b2b3d4e5f\\nlogsource: {product: windows}\\n" \\
       "detection:\\n  sel: {F|wide|base64: x}\\n  condition: sel\\n"
if sys.argv[1] == "load_ruleset":
    ruleset = detectors.load_ruleset([detectors.RuleSource("t.yml", rule)])
else:
    folder = pathlib.Path(tempfile.mkdtemp())
    (folder / "t.yml").write_text(rule)
    ruleset = detectors.load_rules_from_paths([folder])
assert not ruleset.rejections, ruleset.rejections
print(json.dumps({"before": before, "after_import": after_import, "after_load": table()}))
"""


@pytest.mark.parametrize("loader", ["load_ruleset", "load_rules_from_paths"])
def test_importing_detectors_leaves_pysigma_modifiers_alone_and_loading_installs_ours(loader: str) -> None:
    out = subprocess.run([sys.executable, "-c", _REGISTRATION_PROBE, loader], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1]).stdout
    tables = json.loads(out)
    assert tables["after_import"] == tables["before"]
    modifiers, reverse = tables["after_load"]
    ours = {"wide": "WideModifier", "utf16le": "WideModifier", "utf16be": "UTF16BEModifier", "utf16": "UTF16Modifier",
            "base64": "Base64Modifier", "base64offset": "Base64OffsetModifier"}
    assert {name: modifiers[name] for name in ours} == {name: f"detectors.encodings.{cls}" for name, cls in ours.items()}
    assert reverse["WideModifier"] == "wide"  # utf16le is an alias; the canonical name stays `wide`
    untouched = set(tables["before"][0]) - {"wide", "utf16be", "utf16", "base64", "base64offset"}
    assert {n: modifiers[n] for n in untouched} == {n: tables["before"][0][n] for n in untouched}


def test_register_modifiers_is_idempotent() -> None:
    register_modifiers()
    once = (dict(modifier_mapping), dict(reverse_modifier_mapping))
    register_modifiers()
    assert (dict(modifier_mapping), dict(reverse_modifier_mapping)) == once
    # And the rules loaded after a second call still get the byte-exact encoding.
    assert matches("sel:\n    F|utf16|base64: 'cmd'\ncondition: sel",
                   {"F": base64.b64encode(b"\xff\xfe" + "cmd".encode("utf-16le")).decode()})
