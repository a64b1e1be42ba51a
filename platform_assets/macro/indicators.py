"""bronze/silver macro_indicators (IPCA and the Selic target from the central bank's SGS API) and
gold/sales_vs_inflation.

bronze asks the API for the day's window of each series (resources/macro_api.py: timeouts, retries, a circuit
breaker) and keeps the body exactly as received (`<lake>/bronze/macro_indicators_raw/date=<day>/`) and its rows
as text. When the API stays unavailable (after the retries, or the breaker is open) or answers garbage, the day
is written from the newest answer the API did give, marked `fallback` with the reason and when it was really
fetched: the run goes on, the WARN check `macro_data_is_fresh` says how stale it is, and the alert sensor
raises one alert. Without any earlier answer, the step fails: nothing is invented. An answer that says the
request itself is wrong (404 and other 4xx) fails the step at once.
"""

import datetime as dt

import dagster as dg
import pyarrow as pa

from platform_assets.layers.gold import SALES_VS_INFLATION
from platform_assets.layers.inflation import periods
from platform_assets.layers.lake_writes import lake_metadata, retried_on_conflict
from platform_assets.layers.metadata import stopwatch, table_metadata
from platform_assets.layers.partitions import FIRST_DAY, daily, daily_freshness
from platform_assets.macro.series import (
    API,
    BRONZE_SCHEMA,
    NAME,
    bronze_rows,
    cleanse_macro,
    fallback_rows,
    last_good_answer,
    window,
)
from platform_assets.quality import gates
from platform_assets.quality.automation import downstream_condition, external_condition
from resources import Lake
from resources.http.macro_api import SERIES, MacroApiGarbage, MacroApiUnavailable, MacroSeriesApi
from resources.lake.delta_tables import PartitionNotFoundError
from resources.lake.settings import writer_pool
from resources.urls import redact

BRONZE, SILVER = dg.AssetKey(["bronze", NAME]), dg.AssetKey(["silver", NAME])
QUARANTINE, GOLD = dg.AssetKey(["silver", f"{NAME}_quarantine"]), dg.AssetKey(["gold", SALES_VS_INFLATION.name])
RAW = f"{NAME}_raw"  # the bodies as received: <lake>/bronze/macro_indicators_raw/date=<day>/<series>.json
_REQUEST_COLUMNS = (("series", "string"), ("source", "string"), ("status", "int"), ("attempts", "int"),
                    ("seconds", "float"), ("fetched (UTC)", "string"), ("stale hours", "float"), ("url", "string"),
                    ("reason", "string"))


def _fall_back(context: dg.AssetExecutionContext, lake: Lake, series: str, reason: str,
               now: dt.datetime) -> tuple[pa.Table, dict]:
    day = context.partition_key
    try:
        history = lake.read_days("bronze", NAME, FIRST_DAY, "9999-12-31")
    except PartitionNotFoundError:
        history = BRONZE_SCHEMA.empty_table()
    answer = last_good_answer(history, series)
    if not answer.num_rows:
        raise dg.Failure(f"bronze/{NAME} {day}: {series} cannot be fetched ({reason}) and the API never answered it "
                         "before, so there is nothing to fall back on; nothing is invented. Run it again when the "
                         f"API is back ({MacroSeriesApi.ENV_VAR}).", allow_retries=False)
    fetched = answer["_fetched_at"][0].as_py()
    stale = round((now - fetched).total_seconds() / 3600, 1)
    context.log.warning(f"bronze/{NAME} {day}: {series} served from the answer fetched {fetched:%Y-%m-%d %H:%M} UTC "
                        f"({stale} h old) because: {reason}")
    rows = fallback_rows(answer, day, reason, context.run_id, now)
    return rows, {"series": series, "source": "fallback", "status": -1, "attempts": -1, "seconds": -1.0,
                  "fetched (UTC)": f"{fetched:%Y-%m-%d %H:%M:%S}", "stale hours": stale,
                  "url": redact(answer["_url"][0].as_py()), "reason": reason[:300]}


def _series(context: dg.AssetExecutionContext, lake: Lake, api: MacroSeriesApi, series: str,
            now: dt.datetime) -> tuple[pa.Table, dict]:
    day = context.partition_key
    first, last = window(day)
    try:
        fetched = api.fetch(SERIES[series], first, last)
    except MacroApiGarbage as exc:
        lake.write_bytes("bronze", RAW, day, f"{series}_rejected.json", exc.body)
        return _fall_back(context, lake, series, redact(str(exc)), now)
    except MacroApiUnavailable as exc:
        return _fall_back(context, lake, series, redact(str(exc)), now)
    lake.write_bytes("bronze", RAW, day, f"{series}.json", fetched.body)
    rows = bronze_rows(series, fetched.rows, fetched.url, now, API, context.run_id, now)
    return rows, {"series": series, "source": API, "status": fetched.status, "attempts": fetched.attempts,
                  "seconds": fetched.seconds, "fetched (UTC)": f"{now:%Y-%m-%d %H:%M:%S}", "stale hours": 0.0,
                  "url": redact(fetched.url), "reason": ""}


@dg.asset(key=BRONZE, group_name="bronze", partitions_def=daily, kinds={"delta", "http"},
          automation_condition=external_condition, pool=writer_pool("bronze", NAME),
          description="Bronze: IPCA (SGS 433) and the Selic target (432) for the day's month and the 13 before, "
          "from the central bank's API (AEGIS_MACRO_API_URL): every value as the API sent it, the body kept as "
          "received, with URL, status, attempts and latency. When the API is unavailable, the newest earlier "
          "answer, marked fallback (see the macro_data_is_fresh check).")
def bronze_macro_indicators(context: dg.AssetExecutionContext, lake: Lake,
                            macro_api: MacroSeriesApi) -> dg.MaterializeResult:
    day = context.partition_key
    now = dt.datetime.now(dt.UTC)
    with stopwatch() as clock, retried_on_conflict(context):
        parts, requests = zip(*(_series(context, lake, macro_api, series, now) for series in SERIES), strict=True)
        data = pa.concat_tables(parts)
        stats = lake.write_partition("bronze", NAME, day, data, BRONZE_SCHEMA, run_id=context.run_id)
    breaker = macro_api.breaker_status()
    fallbacks = [r["series"] for r in requests if r["source"] != API]
    return dg.MaterializeResult(metadata=table_metadata(
        data, seconds=clock["seconds"], bytes_=stats.bytes, path=stats.path,
        requests=dg.MetadataValue.table([dg.TableRecord(r) for r in requests], schema=dg.TableSchema(
            columns=[dg.TableColumn(n, t) for n, t in _REQUEST_COLUMNS])),
        request_url=dg.MetadataValue.text(" | ".join(r["url"] for r in requests)),
        status=dg.MetadataValue.text(", ".join(f"{r['series']}: {r['status']}" for r in requests)),
        attempts=dg.MetadataValue.int(sum(max(r["attempts"], 0) for r in requests)),
        latency_seconds=dg.MetadataValue.float(sum(max(r["seconds"], 0.0) for r in requests)),
        fallback=dg.MetadataValue.text(", ".join(fallbacks) or "none"),
        breaker_state=dg.MetadataValue.text(str(breaker["state"])), breaker=dg.MetadataValue.json(breaker),
        raw_bodies=dg.MetadataValue.path(lake.partition_dir("bronze", RAW, day)),
        **lake_metadata(lake, "bronze", NAME, day, stats)))


@dg.multi_asset(
    name=f"silver_{NAME}", partitions_def=daily, pool=writer_pool("silver", NAME),
    specs=[dg.AssetSpec(SILVER, deps=[BRONZE], group_name="silver", kinds={"delta"},
                        automation_condition=downstream_condition,
                        description="Silver: the series typed (series, reference_date, value as an exact "
                        "decimal(20, 6)), one row per series and date."),
           dg.AssetSpec(QUARANTINE, deps=[BRONZE], group_name="silver", kinds={"delta"},
                        automation_condition=downstream_condition,
                        description="Quarantine: the observations that are not a real date in the window, not a "
                        "plain number, or repeated (conflicting repeats all of them), each with its reason.")])
def silver_macro_indicators(context: dg.AssetExecutionContext, lake: Lake):
    day = context.partition_key
    gates.enforce(context)
    with stopwatch() as clock, retried_on_conflict(context):
        bronze = lake.read_partition("bronze", NAME, day)
        result = cleanse_macro(bronze, day)
        clean = lake.write_partition("silver", NAME, day, result.clean, result.clean.schema, run_id=context.run_id,
                                     facts={"bronze_rows": bronze.num_rows})
        quarantined = lake.write_partition("silver/quarantine", NAME, day, result.quarantine,
                                           result.quarantine.schema, run_id=context.run_id)
    context.log.info(f"silver/{NAME} {day}: bronze {bronze.num_rows} = silver {result.clean.num_rows} "
                     f"+ quarantined {result.quarantine.num_rows}")
    yield dg.MaterializeResult(asset_key=SILVER, metadata=table_metadata(
        result.clean, seconds=clock["seconds"], bytes_=clean.bytes, path=clean.path,
        bronze_rows=dg.MetadataValue.int(bronze.num_rows),
        quarantined=dg.MetadataValue.int(result.quarantine.num_rows),
        **lake_metadata(lake, "silver", NAME, day, clean)))
    yield dg.MaterializeResult(asset_key=QUARANTINE, metadata=table_metadata(
        result.quarantine, seconds=clock["seconds"], bytes_=quarantined.bytes, path=quarantined.path,
        reasons=dg.MetadataValue.json(result.reasons()),
        **lake_metadata(lake, "silver/quarantine", NAME, day, quarantined)))


@dg.asset(key=GOLD, deps=[dg.AssetKey(["gold", "sales_by_category_daily"]), SILVER], group_name="gold",
          partitions_def=daily, kinds={"duckdb", "delta"}, automation_condition=downstream_condition,
          pool=writer_pool("gold", SALES_VS_INFLATION.name), freshness_policy=daily_freshness,
          description=f"Gold: {SALES_VS_INFLATION.description} Reads gold/sales_by_category_daily from the "
          "previous month's first day to the day, as the lake holds them.")
def gold_sales_vs_inflation(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
    day = context.partition_key
    gates.enforce(context)
    _, _, previous, _ = periods(day)
    with stopwatch() as clock, retried_on_conflict(context):
        sales = lake.read_days("gold", "sales_by_category_daily", previous.isoformat(), day,
                               columns=["day", "category", "orders", "revenue"])
        macro = lake.read_partition("silver", NAME, day)
        result = SALES_VS_INFLATION.build(sales, macro, day)
        stats = lake.write_partition("gold", SALES_VS_INFLATION.name, day, result, result.schema,
                                     run_id=context.run_id)
    return dg.MaterializeResult(metadata=table_metadata(
        result, seconds=clock["seconds"], bytes_=stats.bytes, path=stats.path,
        sales_days=dg.MetadataValue.int(len(set(sales["day"].to_pylist()))),
        ipca_month=dg.MetadataValue.text(str(result["ipca_month"][0]) if result.num_rows else "none"),
        **lake_metadata(lake, "gold", SALES_VS_INFLATION.name, day, stats)))


assets = [bronze_macro_indicators, silver_macro_indicators, gold_sales_vs_inflation]
