//! The executor's Arrow Flight service: streams shuffle buckets to other
//! executors and final partitions to clients (`DoGet` only).
//!
//! A ticket is an encoded `FetchTicket`: ids and the job's token, which are
//! validated and looked up in the [`ShuffleStore`]. Anything else (garbage,
//! a path, a foreign job's id, a wrong token) is refused with a clear status.

use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::faults::{FaultPoint, Faults};
use crate::store::{ShuffleStore, StoreError, is_valid_id};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[derive(Debug, Clone)]
pub struct ShuffleFlightService {
    store: Arc<ShuffleStore>,
    faults: Arc<Faults>,
}

impl ShuffleFlightService {
    pub fn new(store: Arc<ShuffleStore>, faults: Arc<Faults>) -> Self {
        Self { store, faults }
    }
}

fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::WrongToken(_) => Status::permission_denied(e.to_string()),
        StoreError::UnknownJob(_) | StoreError::MissingOutput { .. } => {
            Status::not_found(e.to_string())
        }
        StoreError::NoSuchBucket { .. } => Status::invalid_argument(e.to_string()),
    }
}

fn unsupported(what: &str) -> Status {
    Status::unimplemented(format!(
        "{what} is not offered by Ember executors (DoGet with a FetchTicket only)"
    ))
}

#[tonic::async_trait]
impl FlightService for ShuffleFlightService {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;
    type DoExchangeStream = BoxStream<FlightData>;

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let ticket =
            ember_proto::FetchTicket::decode(request.into_inner().ticket).map_err(|_| {
                Status::invalid_argument("malformed ticket: expected an Ember FetchTicket")
            })?;
        if !is_valid_id(&ticket.job_id) {
            return Err(Status::invalid_argument("malformed ticket: invalid job id"));
        }
        let output = self
            .store
            .open_job(
                &ticket.job_id,
                &ticket.job_token,
                (ticket.stage_id, ticket.map_partition, ticket.attempt),
            )
            .map_err(store_status)?;
        let batches = output.stream(ticket.bucket).map_err(store_status)?;
        let schema = batches.schema();
        // Fault injection (tests only): die mid-stream, once the schema is out.
        let point = if ticket.result {
            FaultPoint::ServeResult
        } else {
            FaultPoint::ServeShuffle
        };
        let faults = Arc::clone(&self.faults);
        let mut sent = 0usize;
        let batches = batches.inspect(move |_| {
            sent += 1;
            if sent == 1 {
                faults.act(faults.fire(point, ticket.stage_id, ticket.map_partition, false));
            }
        });
        // Dictionaries are sent as dictionaries (a reader mixing local and
        // remote map outputs, e.g. of a hive partition column, must see one
        // type), and every type as it is (see `flight_encode`).
        let stream = crate::flight_encode::encode(
            schema,
            batches.map_err(|e| arrow_flight::error::FlightError::ExternalError(Box::new(e))),
        )
        .map_err(|e| Status::internal(e.to_string()));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(unsupported("Handshake"))
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(unsupported("ListFlights"))
    }

    async fn get_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(unsupported("GetFlightInfo"))
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(unsupported("PollFlightInfo"))
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(unsupported("GetSchema"))
    }

    async fn do_put(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(unsupported("DoPut"))
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(unsupported("DoExchange"))
    }

    async fn do_action(
        &self,
        _request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(unsupported("DoAction"))
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Err(unsupported("ListActions"))
    }
}
