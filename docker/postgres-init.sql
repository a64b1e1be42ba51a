-- Run once by the postgres image on first start: one database per role.
CREATE DATABASE dagster;
CREATE DATABASE source;
CREATE DATABASE serving;
