--
-- PostgreSQL database cluster dump
--

\restrict 8NTP4XYtjwt9ChkZGiOvGvCi1pA63iZ4p4r3LflHqKgtyW89d8E2KvL3aaqT9dB

SET default_transaction_read_only = off;

SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;

--
-- Roles
--

CREATE ROLE app_owner;
ALTER ROLE app_owner WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
CREATE ROLE "reporting ro";
ALTER ROLE "reporting ro" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;

--
-- User Configurations
--






\unrestrict 8NTP4XYtjwt9ChkZGiOvGvCi1pA63iZ4p4r3LflHqKgtyW89d8E2KvL3aaqT9dB

--
-- PostgreSQL database cluster dump complete
--

