"""The project's one stand-in macro changes nothing on a real account: there dbt's temporary-table DDL
is generated unchanged; only on the `fakesnow` account does a plain table replace it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from dbt.cli.main import dbtRunner

from runner import dbt, warehouse
from runner.config import Settings

INLINE = "{{ get_create_table_as_sql(true, api.Relation.create('ECOMMERCE', 'ANALYTICS', 'SCRATCH'), 'select 1') }}"


def _compiled(settings: Settings, account: str, tmp_path: Path) -> str:
    profiles = tmp_path / "other_profiles"
    profiles.mkdir()
    profile = (settings.profiles_dir / "profiles.yml").read_text()
    (profiles / "profiles.yml").write_text(profile.replace("account: fakesnow", f"account: {account}"))
    other = dataclasses.replace(settings, profiles_dir=profiles)
    # The stand-in stays patched in (no traffic leaves the machine) while dbt sees the other account.
    with warehouse.session(settings):
        result = dbtRunner().invoke(dbt.dbt_args(other, ["compile", "--inline", INLINE]))
    assert result.success, result.exception
    return str(result.result.results[0].node.compiled_code)


@pytest.mark.parametrize(("account", "temporary"), [("fakesnow", False), ("xy12345.eu-central-1", True)])
def test_temporary_tables_only_change_on_the_standin(
    settings: Settings, tmp_path: Path, account: str, temporary: bool
) -> None:
    sql = " ".join(_compiled(settings, account, tmp_path).lower().split())
    assert "create or replace" in sql and "scratch" in sql
    assert ("temporary table" in sql) is temporary


def test_the_docs_site_opens_on_the_projects_overview(settings: Settings) -> None:
    """The project's `__overview__` doc block replaces dbt's stock "Welcome!" page of the docs site."""
    outcome = dbt.run(settings, ["parse"], quiet=True)
    assert outcome.success
    manifest = json.loads((settings.home / "dbt" / "target" / "manifest.json").read_text())
    overview = manifest["docs"]["doc.ecommerce.__overview__"]["block_contents"]
    assert "TiDB" in overview and "dim_user_labels" in overview and "Welcome" not in overview


def test_the_marts_are_public_and_owned(settings: Settings) -> None:
    """The marts the export relies on are public, in one group with an owner: a contract other projects can see."""
    assert dbt.run(settings, ["parse"], quiet=True).success
    manifest = json.loads((settings.home / "dbt" / "target" / "manifest.json").read_text())
    marts = [n for n in manifest["nodes"].values() if n["resource_type"] == "model" and "marts" in n["fqn"]]
    assert {n["name"] for n in marts} >= {"dim_user_labels", "fct_weekly_hot_items", "fct_monthly_bills"}
    assert {(n["access"], n["group"]) for n in marts} == {("public", "commerce_analytics")}
    assert manifest["groups"]["group.ecommerce.commerce_analytics"]["owner"]["name"]
